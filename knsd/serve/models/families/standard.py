"""The standard architectures' pipeline configs, shipped as package data, made loadable offline.

`knsd/data/models/<variant>/` holds each architecture's `model_index.json` and component configs (see
knsd/data/README.md for where the values come from). Tokenizer vocabularies are not shipped per variant:
every CLIP tokenizer (SD 1.x, 2.x, SDXL, SD 3.x) uses the same BPE file, `knsd/data/tokenizers/
clip_bpe_simple_vocab_16e6.txt.gz`, from which `vocab.json` and `merges.txt` are derived here, the way
OpenAI's and OpenCLIP's `SimpleTokenizer` build their tables. The result is written once into the cache.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
from importlib import resources
from pathlib import Path

from knsd.cache import build_once
from knsd.serve.models.tiny.parts import SPECIAL_TOKENS, byte_alphabet

# Inpainting checkpoints are their base architecture with a 9-channel UNet input (latents, mask, masked-image
# latents): derived from the base's shipped configs with `in_channels: 9` (knsd/data/README.md).
INPAINTING = {"sd15-inpainting": "sd15", "sd2-inpainting": "sd21-base", "sdxl-inpainting": "sdxl-base"}
VARIANTS = ("sd15", "sd21-v", "sd21-base", "sdxl-base", "sd35-medium", "sd35-large", *INPAINTING)
# 49152 BPE entries - 256 byte symbols - 2 specials = 48894 merges (CLIP's vocabulary size is 49408).
_MERGES = 49152 - 256 - 2


def _data() -> Path:
    return Path(str(resources.files("knsd") / "data"))


def clip_vocab() -> tuple[dict[str, int], list[str]]:
    """CLIP's 49408-entry BPE vocabulary and its merges, from the shipped BPE file."""
    text = gzip.decompress((_data() / "tokenizers" / "clip_bpe_simple_vocab_16e6.txt.gz").read_bytes())
    merges = text.decode("utf-8").split("\n")[1 : _MERGES + 1]
    alphabet = byte_alphabet()
    tokens = [
        *alphabet,
        *(c + "</w>" for c in alphabet),
        *("".join(m.split()) for m in merges),
        *SPECIAL_TOKENS,
    ]
    return {t: i for i, t in enumerate(tokens)}, merges


def _write_tokenizers(folder: Path) -> None:
    vocab, merges = clip_vocab()
    for sub in sorted(folder.glob("tokenizer*")):
        if (sub / "tokenizer_config.json").is_file() and "CLIP" in (
            sub / "tokenizer_config.json"
        ).read_text():
            (sub / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
            (sub / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    if (folder / "text_encoder_3").is_dir():  # SD 3.x: T5 v1.1's tokenizer
        t5 = _data() / "tokenizers" / "t5"
        target = folder / "tokenizer_3"
        target.mkdir(exist_ok=True)
        (target / "tokenizer.json").write_bytes(gzip.decompress((t5 / "tokenizer.json.gz").read_bytes()))
        shutil.copy(t5 / "special_tokens_map.json", target)
        config = {"tokenizer_class": "T5Tokenizer", "model_max_length": 512, "eos_token": "</s>",
                  "pad_token": "<pad>", "unk_token": "<unk>", "extra_ids": 100, "legacy": True}  # fmt: skip
        (target / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def fingerprint(variant: str) -> str:
    """A short digest of the shipped config files of `variant` (it names the built config folder); an
    inpainting variant's is its base's, marked."""
    digest = hashlib.sha256()
    base = INPAINTING.get(variant, variant)
    for path in sorted((_data() / "models" / base).rglob("*.json")):
        digest.update(path.read_bytes())
    if base != variant:
        digest.update(b"in_channels: 9")
    return digest.hexdigest()[:12]


def _inpainting_unet(folder: Path) -> None:
    path = folder / "unet" / "config.json"
    config = json.loads(path.read_text())
    config["in_channels"] = 9
    path.write_text(json.dumps(config, indent=2) + "\n")


def config_dir(variant: str, cache: Path) -> Path:
    """A complete diffusers config folder (no weights) for a standard architecture, built once in the cache."""
    base = INPAINTING.get(variant, variant)

    def build(staging: Path) -> None:
        shutil.copytree(_data() / "models" / base, staging, dirs_exist_ok=True)
        if variant in INPAINTING:
            _inpainting_unet(staging)
        _write_tokenizers(staging)

    return build_once(cache / "configs" / f"{variant}-{fingerprint(variant)}", build, cache)
