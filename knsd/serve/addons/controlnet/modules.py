"""sd-webui-controlnet's preprocessors ("modules") as data: names, labels, tags, sliders, masks, weight files.

The table is the extension's registry at commit 56cec5b2 (v1.1.455), read off by importing the extension
(`scripts/supported_preprocessor.py`, `scripts/preprocessor/**`): 72 modules. `model_free` is the API's
flag ("runs without a ControlNet model file"), not "needs no annotator weights"; `files` are the annotator
weights a module loads, relative to the annotator folder (the extension's `annotator/downloads`).
A module whose `files` are empty and that knsd implements runs anywhere; the rest are listed only where
they can run (see `catalog.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Number = int | float


@dataclass(frozen=True, slots=True)
class Slider:
    """A preprocessor parameter: its default, bounds and step (values keep the source's int/float type)."""

    name: str
    value: Number
    min: Number
    max: Number
    step: Number
    visible: bool = True

    def api(self) -> dict[str, Any]:
        """The `module_detail` entry."""
        return {"name": self.name, "value": self.value, "min": self.min, "max": self.max, "step": self.step}


# The base class's defaults: a visible Resolution slider and invisible sliders (0.5 in [0, 1]).
RES = Slider("Resolution", 512, 64, 2048, 8)
HIDDEN = Slider("EMPTY_LABEL", 0.5, 0.0, 1.0, 0.01, visible=False)


def hidden(value: Number) -> Slider:
    return Slider("EMPTY_LABEL", value, 0.0, 1.0, 0.01, visible=False)


@dataclass(frozen=True, slots=True)
class Module:
    """One preprocessor of the extension."""

    name: str
    label: str
    tags: tuple[str, ...]
    priority: int
    res: Slider = RES
    a: Slider = HIDDEN
    b: Slider = HIDDEN
    model_free: bool = False
    mask: Literal["", "accepts", "requires"] = ""
    returns_image: bool = True
    files: tuple[str, ...] = ()  # annotator weights, relative to the annotator folder
    package: str = ""  # a Python package it needs besides knsd's own

    @property
    def alias(self) -> str:
        """The UI label (`alias_names=true`)."""
        return self.label or self.name

    @property
    def is_inpaint(self) -> bool:
        return "inpaint" in self.name

    @property
    def is_reference(self) -> bool:
        return self.name.startswith("reference")

    def sliders(self) -> list[dict[str, Any]]:
        return [s.api() for s in (self.res, self.a, self.b) if s.visible]


def _s(name: str, value: Number, lo: Number, hi: Number, step: Number) -> Slider:
    return Slider(name, value, lo, hi, step)


_FIDELITY = _s("Style Fidelity (only for Balanced mode)", 0.5, 0.0, 1.0, 0.01)
_GAMMA = _s("Gamma Correction", 1.0, 0.1, 2.0, 0.001)
_NOISE_AUG = _s("Noise Augmentation", 0.0, 0.0, 1.0, 0.01)
_SAFE_STEPS = _s("Safe Steps", 2, 0, 10, 1)
_LERES = (_s("Remove Near %", 0, 0, 100, 0.1), _s("Remove Background %", 0, 0, 100, 0.1))
_HED = ("hed/ControlNetHED.pth",)
_PIDI = ("pidinet/table5_pidinet.pth",)
_MIDAS = ("midas/dpt_hybrid-midas-501f0c75.pt",)
_POSE = ("openpose/body_pose_model.pth", "openpose/hand_pose_model.pth", "openpose/facenet.pth")
_CLIP_H, _CLIP_G = ("clip_vision/clip_h.pth",), ("clip_vision/clip_g.pth",)
_ANTELOPE = tuple(
    f"insightface/models/antelopev2/{n}.onnx"
    for n in ("1k3d68", "2d106det", "genderage", "glintr100", "scrfd_10g_bnkps")
)
_BUFFALO = ("insightface/models/buffalo_l",)
_YOLOX = "openpose/yolox_l.onnx"
_DENSEPOSE = ("densepose/densepose_r50_fpn_dl.torchscript",)
M = Module

# fmt: off
# In the extension's registration order; `sorted_modules` gives the API's order.
MODULES: tuple[Module, ...] = (
    M("none", "", ("InstructP2P",), 10),
    M("ip-adapter-auto", "", ("IP-Adapter",), 1000, returns_image=False, files=_CLIP_H),
    M("tile_resample", "", ("Tile",), 100, a=_s("Down Sampling Rate", 1.0, 1.0, 8.0, 0.01)),
    M("pidinet", "softedge_pidinet", ("SoftEdge",), 100, files=_PIDI),
    M("oneformer_ade20k", "seg_ofade20k", ("Segmentation",), 100,
      files=("oneformer/250_16_swin_l_oneformer_ade20k_160k.pth",)),
    M("pidinet_scribble", "scribble_pidinet", ("Scribble", "SparseCtrl"), 100, files=_PIDI),
    M("revision_clipvision", "", ("Revision",), 100, a=_NOISE_AUG, model_free=True, returns_image=False,
      files=_CLIP_G),
    M("reference_only", "", ("Reference",), 100, a=_FIDELITY, model_free=True),
    M("recolor_luminance", "", ("Recolor",), 100, a=_GAMMA),
    M("openpose_full", "", ("OpenPose",), 100, files=_POSE),
    M("normal_bae", "", ("NormalMap",), 100, files=("normal_bae/scannet.pt",)),
    M("mlsd", "", ("MLSD",), 100, a=_s("MLSD Value Threshold", 0.1, 0.01, 2.0, 0.01),
      b=_s("MLSD Distance Threshold", 0.1, 0.01, 20.0, 0.01), files=("mlsd/mlsd_large_512_fp32.pth",)),
    M("lineart_standard", "lineart_standard (from white bg & black line)", ("Lineart",), 100),
    M("ip-adapter_clip_sd15", "ip-adapter_clip_h", ("IP-Adapter",), 100, mask="accepts", returns_image=False,
      files=_CLIP_H),
    M("inpaint_only", "", ("Inpaint",), 100, res=HIDDEN, mask="requires"),
    M("depth", "depth_midas", ("Depth",), 100, files=_MIDAS),
    M("canny", "", ("Canny",), 100, a=_s("Low Threshold", 100, 1, 255, 1), b=_s("High Threshold", 200, 1, 255, 1)),
    M("invert", "invert (from white bg & black line)", ("Canny", "Lineart", "Scribble", "MLSD"), 20, res=HIDDEN),
    M("tile_colorfix+sharp", "", ("Tile",), 0, a=_s("Variation", 8.0, 3.0, 32.0, 1.0),
      b=_s("Sharpness", 1.0, 0.0, 2.0, 0.01)),
    M("tile_colorfix", "", ("Tile",), 0, a=_s("Variation", 8.0, 3.0, 32.0, 1.0)),
    M("threshold", "", (), 0, a=_s("Binarization Threshold", 127, 0, 255, 0.01)),
    M("clip_vision", "t2ia_style_clipvision", ("T2I-Adapter",), 0, returns_image=False,
      files=("clip_vision/clip_vitl.pth",)),
    M("pidinet_sketch", "t2ia_sketch_pidi", ("T2I-Adapter",), 0, files=_PIDI),
    M("color", "t2ia_color_grid", ("T2I-Adapter",), 0),
    M("softedge_teed", "", ("SoftEdge",), 0, a=_SAFE_STEPS, files=("TEED/7_model.pth",)),
    M("pidinet_safe", "softedge_pidisafe", ("SoftEdge",), 0, files=_PIDI),
    M("hed_safe", "softedge_hedsafe", ("SoftEdge",), 0, files=_HED),
    M("hed", "softedge_hed", ("SoftEdge",), 0, files=_HED),
    M("softedge_anyline", "", ("SoftEdge",), 0, res=_s("Resolution", 1280, 64, 2048, 8), a=_SAFE_STEPS,
      files=("TEED/MTEED.pth",)),
    M("shuffle", "", ("Shuffle",), 0, res=hidden(512)),
    M("segmentation", "seg_ufade20k", ("Segmentation",), 0, files=("uniformer/upernet_global_small.pth",)),
    M("oneformer_coco", "seg_ofcoco", ("Segmentation",), 0,
      files=("oneformer/150_16_swin_l_oneformer_coco_100ep.pth",)),
    M("anime_face_segment", "seg_anime_face", ("Segmentation",), 0, files=("anime_face_segment/UNet.pth",)),
    M("scribble_xdog", "", ("Scribble", "SparseCtrl"), 0, a=_s("XDoG Threshold", 32, 1, 64, 0.01)),
    M("scribble_hed", "", ("Scribble", "SparseCtrl"), 0, files=_HED),
    M("revision_ignore_prompt", "", ("Revision",), 0, a=_NOISE_AUG, model_free=True, returns_image=False,
      files=_CLIP_G),
    M("reference_adain+attn", "", ("Reference",), 0, a=_FIDELITY, model_free=True),
    M("reference_adain", "", ("Reference",), 0, a=_FIDELITY, model_free=True),
    M("recolor_intensity", "", ("Recolor",), 0, a=_GAMMA),
    M("openpose_hand", "", ("OpenPose",), 0, files=_POSE),
    M("openpose_faceonly", "", ("OpenPose",), 0, files=_POSE),
    M("openpose_face", "", ("OpenPose",), 0, files=_POSE),
    M("openpose", "", ("OpenPose",), 0, files=_POSE),
    M("normal_map", "normal_midas", ("NormalMap",), 0, a=_s("Normal Background Threshold", 0.4, 0.0, 1.0, 0.01),
      files=_MIDAS),
    M("normal_dsine", "", ("NormalMap",), 0, a=_s("Fov", 60, 0, 360, 0.1), b=_s("Iterations", 5, 1, 20, 1),
      files=("normal_dsine/dsine.pt",)),
    M("mobile_sam", "", ("Segmentation",), 0, files=("mobile_sam/mobile_sam.pt",)),
    M("mediapipe_face", "", (), 0, a=_s("Max Faces", 1, 1, 10, 1),
      b=_s("Min Face Confidence", 0.5, 0.01, 1.0, 0.01), package="mediapipe"),
    M("lineart", "lineart_realistic", ("Lineart",), 0, files=("lineart/sk_model.pth",)),
    M("lineart_coarse", "", ("Lineart",), 0, files=("lineart/sk_model2.pth",)),
    M("lineart_anime_denoise", "", ("Lineart",), 0, files=("manga_line/erika.pth",)),
    M("lineart_anime", "", ("Lineart",), 0, files=("lineart_anime/netG.pth",)),
    M("ip-adapter_pulid", "", ("IP-Adapter",), 0, res=HIDDEN, returns_image=False,
      files=(*_ANTELOPE, "facexlib/detection_Resnet50_Final.pth", "facexlib/parsing_bisenet.pth"),
      package="facexlib"),
    M("ip-adapter_face_id_plus", "", ("IP-Adapter",), 0, returns_image=False, files=(*_BUFFALO, *_CLIP_H),
      package="insightface"),
    M("ip-adapter_face_id", "", ("IP-Adapter",), 0, returns_image=False, files=_BUFFALO, package="insightface"),
    M("ip-adapter_clip_sdxl_plus_vith", "", ("IP-Adapter",), 0, mask="accepts", returns_image=False, files=_CLIP_H),
    M("ip-adapter_clip_sdxl", "ip-adapter_clip_g", ("IP-Adapter",), 0, mask="accepts", returns_image=False,
      files=_CLIP_G),
    M("instant_id_face_keypoints", "", ("Instant-ID",), 0, files=_ANTELOPE, package="insightface"),
    M("instant_id_face_embedding", "", ("Instant-ID",), 0, returns_image=False, files=_ANTELOPE,
      package="insightface"),
    M("inpaint_only+lama", "", ("Inpaint",), 0, res=HIDDEN, mask="requires", files=("lama/ControlNetLama.pth",)),
    M("inpaint", "inpaint_global_harmonious", ("Inpaint",), 0, res=HIDDEN, mask="requires"),
    M("facexlib", "", (), 0, res=HIDDEN,
      files=("facexlib/detection_Resnet50_Final.pth", "facexlib/parsing_bisenet.pth"), package="facexlib"),
    M("dw_openpose_full", "", ("OpenPose",), 0, files=(_YOLOX, "openpose/dw-ll_ucoco_384.onnx")),
    M("depth_zoe", "", ("Depth",), 0, files=("zoedepth/ZoeD_M12_N.pt",)),
    M("depth_leres++", "", ("Depth",), 0, a=_LERES[0], b=_LERES[1],
      files=("leres/res101.pth", "leres/latest_net_G.pth")),
    M("depth_leres", "", ("Depth",), 0, a=_LERES[0], b=_LERES[1], files=("leres/res101.pth",)),
    M("depth_hand_refiner", "", ("Depth",), 0, files=("hand_refiner/hr16/ControlNet-HandRefiner-pruned",),
      package="handrefinerportable"),
    M("depth_anything_v2", "", ("Depth",), 0, files=("depth_anything_v2/depth_anything_v2_vitl.safetensors",)),
    M("depth_anything", "", ("Depth",), 0, files=("depth_anything/depth_anything_vitl14.pth",)),
    M("densepose_parula", "densepose_parula (black bg & blue torso)", ("OpenPose",), 0, files=_DENSEPOSE),
    M("densepose", "densepose (pruple bg & purple torso)", ("OpenPose",), 0, files=_DENSEPOSE),
    M("blur_gaussian", "", ("Tile",), 0, a=_s("Sigma", 9.0, 0.01, 64.0, 0.01)),
    M("animal_openpose", "", ("OpenPose",), 0,
      files=(_YOLOX, "openpose/rtmpose-m_simcc-ap10k_pt-aic-coco_210e-256x256-7a041aa1_20230206.onnx")),
)
# fmt: on

_BY_NAME = {m.name: m for m in MODULES}
_BY_LABEL = {m.alias: m for m in MODULES}
# /controlnet/detect refuses these by name (the extension answers "Module not supported").
DETECT_UNSUPPORTED = frozenset(
    {"clip_vision", "revision_clipvision", "revision_ignore_prompt", "ip-adapter-auto"}
)


def find_module(name: str) -> Module | None:
    """A module by name or label (the extension accepts both, exactly as spelled)."""
    return _BY_NAME.get(name) or _BY_LABEL.get(name)


def sorted_modules(modules: tuple[Module, ...] = MODULES) -> list[Module]:
    """The API's order: `none` first, then by priority and label, both descending."""
    rest = sorted(
        (m for m in modules if m.name != "none"),
        key=lambda m: str(m.priority).zfill(8) + m.alias,
        reverse=True,
    )
    return [m for m in modules if m.name == "none"] + rest


def tags() -> list[str]:
    """Every tag some module carries, sorted (the extension's control types, "All" aside)."""
    return sorted({t for m in MODULES for t in m.tags})
