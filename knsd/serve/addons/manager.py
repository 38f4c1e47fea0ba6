"""The add-ons of one loaded model: folders, caches and parsed files; each request enters its own
`session.AddonSession` over them."""

from __future__ import annotations

import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from knsd.errors import InvalidField
from knsd.serve.addons.controlnet.catalog import Catalog
from knsd.serve.addons.controlnet.models import ControlNetStore
from knsd.serve.addons.embeddings import EmbeddingStore
from knsd.serve.addons.files import LORA_SUFFIXES, AddonFile, Folders, lora_shorthash, scan
from knsd.serve.addons.lora import ParsedLora, parse_lora, read_state_dict
from knsd.serve.addons.patch import WeightPatcher
from knsd.serve.addons.request import AddonRequest, parse_addons
from knsd.serve.addons.rescan import Rescans
from knsd.serve.lru import LruCache

log = logging.getLogger("knsd.serve")
COMPONENTS = ("unet", "transformer", "text_encoder", "text_encoder_2", "text_encoder_3")


@dataclass(frozen=True, slots=True)
class AddonSettings:
    folders: Folders
    lora_cache_mb: float = 1024.0
    overlap_steps: int = 0


class AddOns:
    """Add-on state for one pipeline; every method except `prepare` runs on the pipeline thread."""

    def __init__(self, pipe: Any, settings: AddonSettings, metrics: Any = None) -> None:
        self.pipe = pipe
        self.settings = settings
        self.metrics = metrics
        self.components = {name: getattr(pipe, name, None) for name in COMPONENTS}
        self.patcher = WeightPatcher(self.components)
        self.cache: LruCache[ParsedLora] = LruCache(int(settings.lora_cache_mb * 1024 * 1024))
        self.loras: dict[str, AddonFile] = {}
        self._rescans = Rescans()  # unknown names rescan the folder at most once per interval
        self._hashes: dict[tuple[str, float, int], str] = {}
        tokenizers = [
            t for t in (getattr(pipe, n, None) for n in ("tokenizer", "tokenizer_2")) if t is not None
        ]
        encoders = [
            self.components[n] for n in ("text_encoder", "text_encoder_2") if self.components[n] is not None
        ]
        self.embeddings = EmbeddingStore(settings.folders.embeddings, tokenizers, encoders)
        self.controlnets = ControlNetStore(settings.folders.controlnet)
        self.catalog = Catalog(settings.folders.annotator_dir)
        self._loader = ThreadPoolExecutor(1, "knsd-addon-load")
        self.last_late_steps: list[int] = []  # steps the last request's overlapped LoRAs came in at
        self.refresh()

    def refresh(self) -> None:
        """Re-scan every folder; embeddings are installed now (call on the pipeline thread)."""
        self.refresh_loras()
        self.embeddings.refresh()
        self.embeddings.install()
        self.controlnets.refresh()

    # -- LoRA files --------------------------------------------------------------------------------------
    def refresh_loras(self) -> None:
        found = scan(self.settings.folders.lora, LORA_SUFFIXES)
        self.loras = found

    def _by_alias(self) -> dict[str, AddonFile]:
        """A1111: names are stems; `ss_output_name` aliases too, unless two files share one."""
        aliases: dict[str, list[AddonFile]] = {}
        for item in self.loras.values():
            alias = item.metadata.get("ss_output_name")
            if isinstance(alias, str) and alias:
                aliases.setdefault(alias, []).append(item)
        return {a: items[0] for a, items in aliases.items() if len(items) == 1 and a != "none"}

    def find_lora(self, name: str) -> AddonFile:
        for attempt in range(2):
            item = self.loras.get(name) or self._by_alias().get(name)
            if item is not None:
                return item
            if attempt == 0 and self._rescans.due():
                self.refresh_loras()  # new files on the volume are found without a restart
        installed = ", ".join(sorted(self.loras)) or "none installed"
        raise InvalidField(
            "prompt",
            f"an installed LoRA ({installed})",
            name,
            f"LoRA {name!r} not found; installed: {installed}",
        )

    def lora_api(self) -> list[dict[str, Any]]:
        """`GET /sdapi/v1/loras`."""
        return [
            {
                "name": n,
                "alias": i.metadata.get("ss_output_name") or n,
                "path": str(i.path.resolve()),
                "metadata": i.metadata,
            }
            for n, i in self.loras.items()
        ]

    def lora_hash(self, item: AddonFile) -> str:
        if item.key not in self._hashes:
            self._hashes[item.key] = lora_shorthash(item)
        return self._hashes[item.key]

    def load_lora(self, item: AddonFile) -> ParsedLora:
        """Parsed tensors from the RAM cache, else read from disk (and cached)."""
        cached = self.cache.get(item.key)
        if cached is not None:
            self._count("lora_cache_hits")
            return cached
        self._count("lora_cache_misses")
        started = time.perf_counter()
        try:
            parsed = parse_lora(item.name, read_state_dict(item.path))
        except InvalidField:
            raise
        except (OSError, ValueError, RuntimeError) as exc:
            raise InvalidField(
                "prompt", "a readable LoRA file", item.name, f"LoRA {item.name!r} could not be read: {exc}"
            ) from exc
        self.cache.put(item.key, parsed, parsed.nbytes)
        self._observe("addon_load_seconds", time.perf_counter() - started, "lora")
        return parsed

    def is_cached(self, item: AddonFile) -> bool:
        return item.key in self.cache

    def load_in_background(self, item: AddonFile) -> Future[ParsedLora]:
        return self._loader.submit(self.load_lora, item)

    # -- requests --------------------------------------------------------------------------------------
    def prepare(
        self, body: dict[str, Any], networks: dict[str, list[list[str]]], img2img: bool = False, seed: int = 0
    ) -> AddonRequest:
        """Parse and check a request's add-ons before it queues: unknown names are 422s."""
        request = parse_addons(body, networks, self.catalog.require, seed)
        if request.units and self.components["unet"] is None:
            raise InvalidField(
                "alwayson_scripts.controlnet",
                "no ControlNet units: this model family has no UNet ControlNet",
                "units",
            )
        for tag in request.loras:
            self.find_lora(tag.name)
        for unit in request.units:
            if unit.image is None and not img2img:
                raise InvalidField(f"{unit.field}.image", "a base64 image (txt2img units need one)", None)
            if not unit.module.model_free:
                self.controlnets.resolve(unit.model, f"{unit.field}.model")
        return request

    # -- metrics ---------------------------------------------------------------------------------------
    def _count(self, name: str) -> None:
        metric = getattr(self.metrics, name, None)
        if metric is not None:
            metric.inc()

    def _observe(self, name: str, value: float, kind: str | None = None) -> None:
        metric = getattr(self.metrics, name, None)
        if metric is not None:
            (metric.labels(kind) if kind else metric).observe(value)
