"""The extension's per-step latent corrections, as tensor maths on the UNet's input and output.

Notation as in DDPM: x_t is the UNet's input (diffusers feeds x / sqrt(sigma^2 + 1), the same scaling
as the extension's LDM), eps its output, abar the cumulative alpha at t = round(timestep).

- tile_colorfix: the predicted x0 keeps its detail but takes the reference's low frequencies (a box blur
  of radius k); `+sharp` pushes the unconditional rows towards blur so CFG sharpens.
- inpaint_only: outside the (latent-sized) mask the predicted x0 is the original image's latent.
Both blend the corrected eps with the plain one by clamp(weight, 0, 1).
"""

from __future__ import annotations

from typing import Any

Tensor = Any


def abar_at(alphas_cumprod: Tensor, timestep: Tensor, batch: int) -> Tensor:
    """abar for each row at round(timestep), shaped B x 1 x 1 x 1."""
    import torch

    t = torch.as_tensor(timestep).float().round().long().clamp(0, len(alphas_cumprod) - 1)
    t = t.reshape(-1).expand(batch) if t.numel() == 1 else t.reshape(-1)
    return alphas_cumprod.to(t.device)[t].double().reshape(batch, 1, 1, 1)


def q_sample(x0: Tensor, abar: Tensor, noise: Tensor) -> Tensor:
    """x_t from x0: sqrt(abar) x0 + sqrt(1 - abar) noise."""
    return abar.sqrt().to(x0) * x0 + (1 - abar).sqrt().to(x0) * noise


def x0_from_eps(x_t: Tensor, eps: Tensor, abar: Tensor) -> Tensor:
    return (1 / abar).sqrt().to(x_t) * x_t - (1 / abar - 1).sqrt().to(x_t) * eps


def eps_from_x0(x_t: Tensor, x0: Tensor, abar: Tensor) -> Tensor:
    return ((1 / abar).sqrt().to(x_t) * x_t - x0) / (1 / abar - 1).sqrt().to(x_t)


def box_blur(x: Tensor, k: int) -> Tensor:
    """A (2k+1)^2 box average over a replicate-padded border."""
    import torch.nn.functional as F

    return F.avg_pool2d(F.pad(x, (k, k, k, k), mode="replicate"), (2 * k + 1, 2 * k + 1), stride=(1, 1))


def _blend(eps: Tensor, corrected: Tensor, weight: float) -> Tensor:
    w = max(0.0, min(1.0, weight))
    return corrected * w + eps * (1 - w)


def colorfix(
    x_t: Tensor,
    eps: Tensor,
    abar: Tensor,
    reference: Tensor,
    k: int,
    weight: float,
    sharpness: float | None,
    cond_rows: Tensor,
) -> Tensor:
    """tile_colorfix(+sharp): `sharpness` is threshold_b (its detail weight is 1/100 of it), None without
    +sharp; `cond_rows` is 1 on conditional rows and 0 on unconditional ones (B x 1 x 1 x 1)."""
    predicted = x0_from_eps(x_t, eps, abar)
    x0 = predicted - box_blur(predicted, k) + box_blur(reference.to(predicted), k)
    if sharpness is not None:
        detail = sharpness * 0.01
        soft = detail * box_blur(x0, k) + (1 - detail) * x0
        x0 = cond_rows * x0 + (1 - cond_rows) * soft
    return _blend(eps, eps_from_x0(x_t, x0, abar), weight)


def latent_mask(alpha01: Tensor) -> Tensor:
    """The pixel mask (1 x 1 x H x W in {0, 1}) at latent size: a 10x10 max pool, stride 8, padding 1."""
    import torch.nn.functional as F

    return F.max_pool2d(alpha01, (10, 10), stride=(8, 8), padding=1)


def inpaint_restore(
    x_t: Tensor, eps: Tensor, abar: Tensor, reference: Tensor, mask: Tensor, weight: float
) -> Tensor:
    """inpaint_only: x0 = predicted inside the mask, the original's latent outside."""
    predicted = x0_from_eps(x_t, eps, abar)
    m = mask.to(predicted)
    x0 = predicted * m + reference.to(predicted) * (1 - m)
    return _blend(eps, eps_from_x0(x_t, x0, abar), weight)
