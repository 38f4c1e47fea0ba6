"""Preprocessors that run a network from the annotator folder: HED (softedge_hed, softedge_hedsafe,
scribble_hed; `hed/ControlNetHED.pth`), the informative-drawings line generators (lineart_realistic,
lineart_coarse; `lineart/sk_model.pth`, `sk_model2.pth`) and the anime line U-Net (lineart_anime;
`lineart_anime/netG.pth`), as the extension runs them (float32, RGB).

The networks are rebuilt here with the parameter names of those files and loaded with `weights_only`
(no pickled code runs); at most two stay in memory.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from knsd.errors import ModelError
from knsd.serve.addons.controlnet.imageops import hwc3, resize_with_pad
from knsd.serve.addons.controlnet.thin import naked_nms

Array = Any
HED_FILE, LINEART_FILE, COARSE_FILE = "hed/ControlNetHED.pth", "lineart/sk_model.pth", "lineart/sk_model2.pth"
ANIME_FILE = "lineart_anime/netG.pth"


def hed_network() -> Any:
    """Five VGG-like stages (2, 2, 3, 3, 3 convolutions with ReLU, max-pooled between stages), each with a
    1x1 projection to one edge channel; the input is the RGB in 0-255 minus a learnt per-channel offset."""
    import torch
    from torch import nn

    class Stage(nn.Module):
        def __init__(self, cin: int, cout: int, layers: int) -> None:
            super().__init__()
            self.convs = nn.Sequential(
                *(nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1) for i in range(layers))
            )
            self.projection = nn.Conv2d(cout, 1, 1)

        def forward(self, h: Any, pool: bool) -> tuple[Any, Any]:
            if pool:
                h = nn.functional.max_pool2d(h, kernel_size=2, stride=2)
            for conv in self.convs:
                h = nn.functional.relu(conv(h))
            return h, self.projection(h)

    class Hed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = nn.Parameter(torch.zeros(1, 3, 1, 1))
            widths = ((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3))
            for i, (cin, cout, layers) in enumerate(widths, start=1):
                setattr(self, f"block{i}", Stage(cin, cout, layers))

        def forward(self, x: Any) -> list[Any]:
            h, edges = x - self.norm, []
            for i in range(1, 6):
                h, edge = getattr(self, f"block{i}")(h, i > 1)
                edges.append(edge)
            return edges

    return Hed()


def lineart_network() -> Any:
    """A ResNet generator: 7x7 conv, two stride-2 convs, three residual blocks, two transposed convs, 7x7 conv
    to one channel and a sigmoid; instance norms and reflection padding."""
    from torch import nn

    def norm(c: int) -> Any:
        return nn.InstanceNorm2d(c)

    class Residual(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.conv_block = nn.Sequential(
                nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), norm(c), nn.ReLU(),
                nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), norm(c),
            )  # fmt: skip

        def forward(self, x: Any) -> Any:
            return x + self.conv_block(x)

    class Generator(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model0 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(3, 64, 7), norm(64), nn.ReLU())
            self.model1 = nn.Sequential(
                nn.Conv2d(64, 128, 3, stride=2, padding=1), norm(128), nn.ReLU(),
                nn.Conv2d(128, 256, 3, stride=2, padding=1), norm(256), nn.ReLU(),
            )  # fmt: skip
            self.model2 = nn.Sequential(*(Residual(256) for _ in range(3)))
            self.model3 = nn.Sequential(
                nn.ConvTranspose2d(256, 128, 3, stride=2, padding=1, output_padding=1), norm(128), nn.ReLU(),
                nn.ConvTranspose2d(128, 64, 3, stride=2, padding=1, output_padding=1), norm(64), nn.ReLU(),
            )  # fmt: skip
            self.model4 = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(64, 1, 7), nn.Sigmoid())

        def forward(self, x: Any) -> Any:
            return self.model4(self.model3(self.model2(self.model1(self.model0(x)))))

    return Generator()


def anime_network() -> Any:
    """pix2pix's U-Net generator with 8 levels (64 filters at the top, 512 from the fourth level down),
    instance norms without weights, 4x4 stride-2 convolutions down (LeakyReLU 0.2) and transposed ones up
    (ReLU), skip connections by concatenation, tanh out."""
    import torch
    from torch import nn

    def norm(c: int) -> Any:
        return nn.InstanceNorm2d(c, affine=False, track_running_stats=False)

    class Level(nn.Module):
        def __init__(
            self, outer: int, inner: int, sub: Any, cin: int | None = None, outermost: bool = False
        ) -> None:
            super().__init__()
            cin = outer if cin is None else cin
            down = nn.Conv2d(cin, inner, 4, stride=2, padding=1, bias=True)
            self.outermost = outermost
            if outermost:
                layers = [
                    down,
                    sub,
                    nn.ReLU(),
                    nn.ConvTranspose2d(inner * 2, outer, 4, stride=2, padding=1),
                    nn.Tanh(),
                ]
            elif sub is None:
                up = nn.ConvTranspose2d(inner, outer, 4, stride=2, padding=1)
                layers = [nn.LeakyReLU(0.2), down, nn.ReLU(), up, norm(outer)]
            else:
                up = nn.ConvTranspose2d(inner * 2, outer, 4, stride=2, padding=1)
                layers = [nn.LeakyReLU(0.2), down, norm(inner), sub, nn.ReLU(), up, norm(outer)]
            self.model = nn.Sequential(*layers)

        def forward(self, x: Any) -> Any:
            return self.model(x) if self.outermost else torch.cat([x, self.model(x)], 1)

    class Generator(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            level = Level(512, 512, None)
            for _ in range(3):
                level = Level(512, 512, level)
            for outer in (256, 128, 64):
                level = Level(outer, outer * 2, level)
            self.model = Level(1, 64, level, cin=3, outermost=True)

        def forward(self, x: Any) -> Any:
            return self.model(x)

    return Generator()


class AnnotatorModels:
    """Networks loaded from the annotator folder, the two most recent kept (loading is serialised)."""

    def __init__(self, folder: Path, keep: int = 2) -> None:
        self.folder = folder
        self._loaded: OrderedDict[str, Any] = OrderedDict()
        self._keep = keep
        self._lock = threading.Lock()

    def network(self, file: str, build: Callable[[], Any]) -> Any:
        import torch

        with self._lock:
            if file in self._loaded:
                self._loaded.move_to_end(file)
                return self._loaded[file]
            net = build()
            try:
                state = torch.load(self.folder / file, map_location="cpu", weights_only=True)
                # checkpoints saved from DataParallel carry a "module." prefix
                net.load_state_dict({k.replace("module.", ""): v for k, v in state.items()})
            except Exception as exc:  # a truncated or foreign file: say which, not a 500
                raise ModelError(
                    f"annotator weights {self.folder / file} could not be loaded: {exc}"
                ) from exc
            net.float().eval()
            self._loaded[file] = net
            while len(self._loaded) > self._keep:
                self._loaded.popitem(last=False)
            return net


def _hed(img: Array, res: int, models: AnnotatorModels, safe: bool) -> Array:
    import cv2
    import numpy as np
    import torch

    padded, unpad = resize_with_pad(img, res)
    h, w = padded.shape[:2]
    net = models.network(HED_FILE, hed_network)
    with torch.no_grad():
        edges = net(torch.from_numpy(padded.copy()).float().permute(2, 0, 1)[None])
    maps = [
        cv2.resize(e.numpy().astype(np.float32)[0, 0], (w, h), interpolation=cv2.INTER_LINEAR) for e in edges
    ]
    with np.errstate(over="ignore"):  # exp(-x) for very negative x: inf, and the sigmoid is 0
        edge = 1 / (1 + np.exp(-np.mean(np.stack(maps, axis=2), axis=2).astype(np.float64)))
    if safe:  # quantised to steps of 1/2: fewer, firmer edges
        edge = (edge.astype(np.float32) * 3.0).astype(np.int32).astype(np.float32) / 2.0
    return unpad((edge * 255.0).clip(0, 255).astype(np.uint8))


def hed(img: Array, res: int, a: float, b: float, models: AnnotatorModels) -> Array:
    return hwc3(_hed(img, res, models, safe=False))


def hed_safe(img: Array, res: int, a: float, b: float, models: AnnotatorModels) -> Array:
    return hwc3(_hed(img, res, models, safe=True))


def scribble_hed(img: Array, res: int, a: float, b: float, models: AnnotatorModels) -> Array:
    """HED's edges thinned (blur 3, local maxima above 127), blurred by 3 again and binarised at 4."""
    import cv2
    import numpy as np

    edge = _hed(img, res, models, safe=False)
    peaks = naked_nms(cv2.GaussianBlur(edge.astype(np.float32), (0, 0), 3.0))
    lines = np.zeros(peaks.shape, np.uint8)
    lines[peaks > 127] = 255
    lines = cv2.GaussianBlur(lines, (0, 0), 3.0)
    lines[lines > 4] = 255
    lines[lines < 255] = 0
    return hwc3(lines)


def _lineart(img: Array, res: int, models: AnnotatorModels, file: str) -> Array:
    import torch

    padded, unpad = resize_with_pad(img, res)
    net = models.network(file, lineart_network)
    with torch.no_grad():
        line = net(torch.from_numpy(padded.copy()).float().div(255.0).permute(2, 0, 1)[None])[0, 0]
    drawn = (line.numpy() * 255.0).clip(0, 255).astype("uint8")
    return hwc3(unpad(255 - drawn))  # white lines on black, as ControlNet's lineart models take them


def lineart_anime(img: Array, res: int, a: float, b: float, models: AnnotatorModels) -> Array:
    """The anime line generator at multiples of 256 (cubic there and back), inverted to white on black."""
    import cv2
    import numpy as np
    import torch

    padded, unpad = resize_with_pad(img, res)
    h, w = padded.shape[:2]
    hn, wn = 256 * int(np.ceil(h / 256.0)), 256 * int(np.ceil(w / 256.0))
    net = models.network(ANIME_FILE, anime_network)
    scaled = cv2.resize(padded, (wn, hn), interpolation=cv2.INTER_CUBIC)
    with torch.no_grad():
        feed = torch.from_numpy(scaled).float().div(127.5).sub(1.0).permute(2, 0, 1)[None]
        line = (net(feed)[0, 0] * 127.5 + 127.5).numpy()
    line = cv2.resize(line, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)
    return hwc3(unpad(255 - line))


def lineart(img: Array, res: int, a: float, b: float, models: AnnotatorModels) -> Array:
    return _lineart(img, res, models, LINEART_FILE)


def lineart_coarse(img: Array, res: int, a: float, b: float, models: AnnotatorModels) -> Array:
    return _lineart(img, res, models, COARSE_FILE)


ANNOTATORS: dict[str, Callable[[Array, int, float, float, AnnotatorModels], Array]] = {
    "hed": hed,
    "hed_safe": hed_safe,
    "scribble_hed": scribble_hed,
    "lineart": lineart,
    "lineart_coarse": lineart_coarse,
    "lineart_anime": lineart_anime,
}
