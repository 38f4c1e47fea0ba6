"""Cheap latent-to-RGB decoders for live previews: A1111's linear factors, and two small networks whose
weights are read from the model volume (A1111 downloads them; knsd never does).

- "Approx cheap": RGB = latents (channels) x a fixed channels-by-3 matrix, per family. The factors are
  numeric constants from A1111 v1.10.1 (`modules/sd_vae_approx.py`, `cheap_approximation`, commit
  82a973c0), which cites https://discuss.huggingface.co/t/decoding-latents-to-rgb-without-upscaling/23204/2.
- "Approx NN": A1111's VAEApprox, eight convolutions with leaky ReLU over the 2x upsampled latents;
  weights `VAE-approx/model.pt` (SD 1.x/2.x), `vaeapprox-sdxl.pt`, `vaeapprox-sd3.pt`.
- "TAESD": madebyollin's tiny autoencoder decoder (MIT licence); weights `VAE-taesd/taesd_decoder.pth`,
  `taesdxl_decoder.pth`, `taesd3_decoder.pth`, as A1111 names them.

The networks are written here from their published layer lists; their state-dict keys match the files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_SD1 = (
    (0.298, 0.207, 0.208),
    (0.187, 0.286, 0.173),
    (-0.158, 0.189, 0.264),
    (-0.184, -0.271, -0.473),
)
_SDXL = (
    (0.3448, 0.4168, 0.4395),
    (-0.1953, -0.0290, 0.0250),
    (0.1074, 0.0886, -0.0163),
    (-0.3730, -0.2499, -0.2088),
)
_SD3 = (
    (-0.0645, 0.0177, 0.1052), (0.0028, 0.0312, 0.0650), (0.1848, 0.0762, 0.0360), (0.0944, 0.0360, 0.0889),
    (0.0897, 0.0506, -0.0364), (-0.0020, 0.1203, 0.0284), (0.0855, 0.0118, 0.0283), (-0.0539, 0.0658, 0.1047),
    (-0.0057, 0.0116, 0.0700), (-0.0412, 0.0281, -0.0039), (0.1106, 0.1171, 0.1220), (-0.0248, 0.0682, -0.0481),
    (0.0815, 0.0846, 0.1207), (-0.0120, -0.0055, -0.0867), (-0.0749, -0.0634, -0.0456), (-0.1418, -0.1457, -0.1259),
)  # fmt: skip
# Family -> latent-to-RGB factors (one row per latent channel); SD 2.x uses SD 1.x's, as in A1111.
LATENT_RGB_FACTORS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "sd1": _SD1,
    "sd2": _SD1,
    "sdxl": _SDXL,
    "sd3": _SD3,
}
# Method -> (folder on the volume, family -> weights file name).
WEIGHT_FILES: dict[str, tuple[str, dict[str, str]]] = {
    "Approx NN": (
        "VAE-approx",
        {"sd1": "model.pt", "sd2": "model.pt", "sdxl": "vaeapprox-sdxl.pt", "sd3": "vaeapprox-sd3.pt"},
    ),
    "TAESD": (
        "VAE-taesd",
        {
            "sd1": "taesd_decoder.pth",
            "sd2": "taesd_decoder.pth",
            "sdxl": "taesdxl_decoder.pth",
            "sd3": "taesd3_decoder.pth",
        },
    ),
}


def weights_path(volume: Path, method: str, family: str) -> Path:
    """Where `method`'s weights for `family` lie on the model volume."""
    folder, names = WEIGHT_FILES[method]
    return volume / folder / names.get(family, names["sd1"])


def cheap_rgb(latents: Any, family: str) -> Any:
    """Approx cheap: (N, C, h, w) latents -> (N, 3, h, w) RGB in about [-1, 1]."""
    import torch

    factors = torch.tensor(LATENT_RGB_FACTORS.get(family, _SD1), dtype=torch.float32, device=latents.device)
    if latents.shape[1] != factors.shape[0]:
        raise ValueError(
            f"Approx cheap has factors for {factors.shape[0]} latent channels, got {latents.shape[1]}"
        )
    return torch.einsum("nchw,cr->nrhw", latents.float(), factors)


def vae_approx(latent_channels: int) -> Any:
    """A1111's VAEApprox network (output in about [-1, 1], at twice the latent size minus borders)."""
    from torch import nn

    class VAEApprox(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            widths = (latent_channels, 8, 16, 32, 64, 32, 16, 8, 3)
            kernels = (7, 5, 3, 3, 3, 3, 3, 3)
            for i, k in enumerate(kernels):
                setattr(self, f"conv{i + 1}", nn.Conv2d(widths[i], widths[i + 1], (k, k)))

        def forward(self, x: Any) -> Any:
            x = nn.functional.interpolate(x, (x.shape[2] * 2, x.shape[3] * 2))
            x = nn.functional.pad(x, (11, 11, 11, 11))
            for i in range(8):
                x = nn.functional.leaky_relu(getattr(self, f"conv{i + 1}")(x), 0.1)
            return x

    return VAEApprox()


def taesd_decoder(latent_channels: int) -> Any:
    """TAESD's decoder (output in [0, 1], at 8x the latent size)."""
    import torch
    from torch import nn

    def conv(n_in: int, n_out: int, bias: bool = True) -> Any:
        return nn.Conv2d(n_in, n_out, 3, padding=1, bias=bias)

    class Clamp(nn.Module):
        def forward(self, x: Any) -> Any:
            return torch.tanh(x / 3) * 3

    class Block(nn.Module):
        def __init__(self, n: int) -> None:
            super().__init__()
            self.conv = nn.Sequential(conv(n, n), nn.ReLU(), conv(n, n), nn.ReLU(), conv(n, n))
            self.skip = nn.Identity()
            self.fuse = nn.ReLU()

        def forward(self, x: Any) -> Any:
            return self.fuse(self.conv(x) + self.skip(x))

    layers: list[Any] = [Clamp(), conv(latent_channels, 64), nn.ReLU()]
    for _ in range(3):
        layers += [Block(64), Block(64), Block(64), nn.Upsample(scale_factor=2), conv(64, 64, bias=False)]
    layers += [Block(64), conv(64, 3)]
    return nn.Sequential(*layers)


def load_network(method: str, path: Path, latent_channels: int, device: Any, dtype: Any) -> Any:
    """The `method` network with its weights from `path` (tensors only: a pickle that runs code is refused)."""
    import torch

    net = vae_approx(latent_channels) if method == "Approx NN" else taesd_decoder(latent_channels)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval().to(device=device, dtype=dtype)


def network_rgb(net: Any, method: str, latents: Any) -> Any:
    """A network's RGB in about [-1, 1] (TAESD answers in [0, 1])."""
    param = next(net.parameters())
    out = net(latents.to(device=param.device, dtype=param.dtype)).float()
    return out * 2 - 1 if method == "TAESD" else out
