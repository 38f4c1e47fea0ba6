"""Reading A1111's generation parameters back from an image: `/sdapi/v1/png-info` (pure).

Ported from AUTOMATIC1111/stable-diffusion-webui v1.10: `modules/images.py` (`read_info_from_image`),
`modules/infotext_utils.py` (`parse_generation_parameters`, `restore_old_hires_fix_params`) and
`modules/infotext_versions.py` (`backcompat`).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from typing import Any

from knsd.serve.api.styles import StyleDatabase, extract_styles

_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_IMAGE_SIZE = re.compile(r"^(\d+)x(\d+)$")
# Image.info keys that are housekeeping, not generation metadata (A1111's IGNORED_INFO_KEYS).
_IGNORED = frozenset(
    [
        "jfif",
        "jfif_version",
        "jfif_unit",
        "jfif_density",
        "dpi",
        "exif",
        "loop",
        "background",
        "timestamp",
        "duration",
        "progressive",
        "progression",
        "icc_profile",
        "chromaticity",
        "photoshop",
    ]
)
_EXIF_IFD, _USER_COMMENT = 0x8769, 0x9286
# Defaults A1111 adds when an infotext lacks the key, in its order.
_DEFAULTS: tuple[tuple[str, Any], ...] = (
    ("Hires sampler", "Use same sampler"),
    ("Hires schedule type", "Use same scheduler"),
    ("Hires checkpoint", "Use same checkpoint"),
    ("Hires prompt", ""),
    ("Hires negative prompt", ""),
    ("Mask mode", "Inpaint masked"),
    ("Masked content", "original"),
    ("Inpaint area", "Whole picture"),
    ("Masked area padding", 32),
)
_LATE_DEFAULTS: tuple[tuple[str, Any], ...] = (
    ("RNG", "GPU"),
    ("Schedule type", "Automatic"),
    ("Schedule max sigma", 0),
    ("Schedule min sigma", 0),
    ("Schedule rho", 0),
    ("VAE Encoder", "Full"),
    ("VAE Decoder", "Full"),
    ("FP8 weight", "Disable"),
)


def _user_comment(raw: bytes) -> str:
    """EXIF UserComment as piexif's helper decodes it: an 8-byte charset prefix, then the text."""
    prefix, body = raw[:8], raw[8:]
    if prefix == b"UNICODE\x00":
        return body.decode("utf-16-be", errors="ignore")
    if prefix in (b"ASCII\x00\x00\x00", b"\x00" * 8):
        return body.decode("ascii", errors="ignore")
    return raw.decode("utf-8", errors="ignore")


def _json_value(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (tuple, list)):
        return [_json_value(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def read_info(image: Any) -> tuple[str | None, dict[str, Any]]:
    """The `parameters` text (PNG chunk, else EXIF UserComment, else GIF comment) and the other keys."""
    items = dict(image.info or {})
    geninfo = items.pop("parameters", None)
    if "exif" in items:
        try:
            raw = image.getexif().get_ifd(_EXIF_IFD).get(_USER_COMMENT, b"")
        except Exception:  # a broken EXIF block is no metadata, not an error
            raw = b""
        comment = _user_comment(raw) if isinstance(raw, bytes) else str(raw)
        if comment:
            items["exif comment"] = comment
            geninfo = comment
    elif "comment" in items:  # GIF
        comment = items["comment"]
        geninfo = comment.decode("utf8", errors="ignore") if isinstance(comment, bytes) else str(comment)
    for key in _IGNORED:
        items.pop(key, None)
    return (None if geninfo is None else str(geninfo)), {str(k): _json_value(v) for k, v in items.items()}


def unquote(text: str) -> str:
    if len(text) == 0 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str) else text


def _old_first_pass(width: int, height: int) -> tuple[int, int]:
    """A1111's `old_hires_fix_first_pass_dimensions`: scale to about 512x512, rounded up to 64."""
    scale = math.sqrt(512 * 512 / (width * height))
    return math.ceil(scale * width / 64) * 64, math.ceil(scale * height / 64) * 64


def _restore_old_hires(res: dict[str, Any]) -> None:
    first_w, first_h = res.get("First pass size-1"), res.get("First pass size-2")
    if first_w is None or first_h is None:
        return
    w, h = int(first_w), int(first_h)
    width, height = int(res.get("Size-1", 512)), int(res.get("Size-2", 512))
    if (w == 0 or h == 0) and width and height:
        w, h = _old_first_pass(width, height)
    res["Size-1"], res["Size-2"] = w, h
    res["Hires resize-1"], res["Hires resize-2"] = width, height


def _version(text: Any) -> Any:
    from packaging import version

    if not isinstance(text, str):
        return None
    m = re.match(r"([^-]+-[^-]+)-.*", text)
    try:
        return version.parse(m.group(1) if m else text)
    except version.InvalidVersion:
        return None


def _backcompat(res: dict[str, Any]) -> None:
    """Infotexts from older A1111 versions switch on the matching compatibility options."""
    from packaging import version

    ver = _version(res.get("Version"))
    if ver is None:
        return
    if ver < version.parse("1.6.0") and "[" in res.get("Prompt", ""):
        res["Old prompt editing timelines"] = True
    if ver < version.parse("1.6.0") and res.get("Sampler", "") in ("DDIM", "PLMS"):
        res["Pad conds v0"] = True
    if ver < version.parse("v1.7.0-225"):
        res["Downcast alphas_cumprod"] = True
    if ver < version.parse("1.8.0") and res.get("Refiner"):
        res["Refiner switch by sampling steps"] = True


def _uses_emphasis(prompt: str, negative: str) -> bool:
    from knsd.serve.prompts.parser import parse_prompt_attention

    try:
        pairs = parse_prompt_attention(prompt) + parse_prompt_attention(negative)
    except (ValueError, RecursionError):  # A1111 fails here; png-info answers without the key instead
        return False
    return any(weight != 1.0 and text != "BREAK" for text, weight in pairs)


def _split_prompts(lines: list[str]) -> tuple[str, str]:
    """Lines before `Negative prompt:` are the prompt, the rest the negative (joined as A1111 does)."""
    prompt = negative = ""
    done = False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done = True
            line = line[16:].strip()
        if done:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    return prompt, negative


def _extract_styles(res: dict[str, Any], prompt: str, negative: str, db: StyleDatabase) -> tuple[str, str]:
    """Take known styles out of the prompts ("Styles array"), as A1111's default "Apply if any" does."""
    found, prompt_ns, negative_ns = extract_styles(db, prompt, negative)
    same = True
    ver = _version(res.get("Version"))
    if ("Hires prompt" in res or "Hires negative prompt" in res) and (
        ver is None or ver > _version("1.8.0-139")
    ):
        hr_prompt, hr_negative = res.get("Hires prompt", prompt), res.get("Hires negative prompt", negative)
        hr_found, hr_prompt_ns, hr_negative_ns = extract_styles(db, hr_prompt, hr_negative)
        same = found == hr_found
        if same:
            res["Hires prompt"] = "" if hr_prompt_ns == prompt_ns else hr_prompt_ns
            res["Hires negative prompt"] = "" if hr_negative_ns == negative_ns else hr_negative_ns
    if same:
        prompt, negative = prompt_ns, negative_ns
        if found:
            res["Styles array"] = found
    return prompt, negative


def parse_generation_parameters(text: str, styles: StyleDatabase | None = None) -> dict[str, Any]:
    """A1111's dict of an infotext: Prompt, Negative prompt, every `Key: value`, and its defaults."""
    *lines, last = text.strip().split("\n")
    if len(_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt, negative = _split_prompts(lines)
    res: dict[str, Any] = {}
    for key, value in _PARAM.findall(last):
        if value[:1] == '"' and value[-1:] == '"':
            value = unquote(value)
        m = _IMAGE_SIZE.match(value)
        if m is not None:
            res[f"{key}-1"], res[f"{key}-2"] = m.group(1), m.group(2)
        else:
            res[key] = value
    if styles is not None and styles.styles:
        prompt, negative = _extract_styles(res, prompt, negative, styles)
    res["Prompt"], res["Negative prompt"] = prompt, negative
    res.setdefault("Clip skip", "1")
    if "Hypernet" in res:
        res["Prompt"] += f"<hypernet:{res['Hypernet']}:{res.get('Hypernet strength', '1.0')}>"
    if "Hires resize-1" not in res:
        res["Hires resize-1"], res["Hires resize-2"] = 0, 0
    for key, default in _DEFAULTS:
        res.setdefault(key, default)
    # A non-numeric size in a hand-written infotext: leave the values as written.
    with contextlib.suppress(ValueError):
        _restore_old_hires(res)
    for key, default in _LATE_DEFAULTS:
        res.setdefault(key, default)
    if "Cache FP16 weight for LoRA" not in res and res["FP8 weight"] != "Disable":
        res["Cache FP16 weight for LoRA"] = False
    if "Emphasis" not in res and _uses_emphasis(prompt, negative):
        res["Emphasis"] = "Original"
    res.setdefault("Refiner switch by sampling steps", False)
    _backcompat(res)
    return res
