"""Which modules this server runs, and the extension's listings over them (`/controlnet/module_list`,
`/controlnet/control_types`).

A module runs when knsd implements it (`imageops.PREPROCESSORS`, `annotators.ANNOTATORS`) and its
annotator weights are in the annotator folder; only those are listed. Asking for another is a 422 that names the files it needs.
The control types keep every tag of the extension (a depth ControlNet model is usable with an already
made depth map and `none`); their module lists hold the runnable modules only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from knsd.errors import InvalidField
from knsd.serve.addons.controlnet.annotators import ANNOTATORS, AnnotatorModels
from knsd.serve.addons.controlnet.imageops import PREPROCESSORS
from knsd.serve.addons.controlnet.modules import MODULES, Module, sorted_modules, tags

# Model-name fragments that belong to a tag besides the tag itself (the extension's `select_control_type`).
_TAG_ALIASES = {
    "instructp2p": ("ip2p",),
    "segmentation": ("seg",),
    "normalmap": ("normal",),
    "t2i-adapter": ("t2i_adapter", "t2iadapter", "t2ia"),
    "ip-adapter": ("ip_adapter", "ipadapter"),
    "openpose": ("openpose", "densepose"),
    "instant-id": ("instant_id", "instantid"),
    "scribble": ("sketch",),
    "tile": ("blur",),
}
# Tags under which a union ControlNet ("...union...") is listed too.
_UNION_TAGS = frozenset(
    {"openpose", "depth", "softedge", "scribble", "canny", "lineart", "mlsd", "normalmap", "segmentation"}
    | {"inpaint", "tile"}
)


IMPLEMENTED = frozenset(PREPROCESSORS) | frozenset(ANNOTATORS)


class Catalog:
    """The modules of one server, given its annotator folder, and running them."""

    def __init__(self, annotators: Path, implemented: frozenset[str] = IMPLEMENTED) -> None:
        self.annotators = annotators
        self.implemented = implemented
        self.models = AnnotatorModels(annotators)

    def run(self, module: Module, image: Any, res: int, a: float, b: float, rng: Any) -> Any:
        """The module's detected map (`rng` is the numpy random state shuffle draws from)."""
        if module.name in ANNOTATORS:
            return ANNOTATORS[module.name](image, res, a, b, self.models)
        return PREPROCESSORS[module.name](image, res, a, b, rng)

    def missing(self, module: Module) -> list[str]:
        """The annotator files `module` needs that are not in the folder."""
        return [f for f in module.files if not (self.annotators / f).exists()]

    def runs(self, module: Module) -> bool:
        return module.name in self.implemented and not self.missing(module)

    def runnable(self) -> tuple[Module, ...]:
        return tuple(m for m in MODULES if self.runs(m))

    def require(self, module: Module, field: str) -> None:
        """A 422 naming what `module` needs when this server cannot run it."""
        if self.runs(module):
            return
        missing = self.missing(module)
        needs = f"annotator weights {', '.join(missing)} under {self.annotators}" if missing else ""
        if module.package:
            needs += f"{' and ' if needs else ''}the Python package {module.package}"
        if missing:
            message = f"module {module.name} needs {needs}, which are not on this server"
        else:
            message = f"module {module.name} is not implemented by knsd (it needs {needs or 'its model'})"
        raise InvalidField(field, "a module of GET /controlnet/module_list", module.name, message)

    def module_list(self, alias_names: bool) -> dict[str, Any]:
        """`GET /controlnet/module_list`: names (or labels) in the extension's order, and their sliders."""
        modules = sorted_modules(self.runnable())

        def key(m: Module) -> str:
            return m.alias if alias_names else m.name

        return {
            "module_list": [key(m) for m in modules],
            "module_detail": {key(m): {"model_free": m.model_free, "sliders": m.sliders()} for m in modules},
        }

    def control_types(self, titles: list[str]) -> dict[str, Any]:
        """`GET /controlnet/control_types` for the installed models' titles."""
        modules = sorted_modules(self.runnable())
        types: dict[str, Any] = {
            "All": {
                "module_list": [m.alias for m in modules],
                "model_list": ["None", *titles],
                "default_option": "none",
                "default_model": "None",
            }
        }
        for tag in tags():
            low = tag.lower()
            labels = [m.alias for m in modules if m.name == "none" or tag in m.tags]
            fragments = (low, *_TAG_ALIASES.get(low, ()))
            models = [
                t
                for t in titles
                if any(f in t.lower() for f in fragments) or (low in _UNION_TAGS and "union" in t.lower())
            ]
            default = next((t for t in models if "11" in t.split("[")[0]), models[0] if models else "None")
            types[tag] = {
                "module_list": labels,
                "model_list": ["None", *models],
                "default_option": labels[1] if len(labels) > 1 else labels[0],
                "default_model": default,
            }
        return {"control_types": types}
