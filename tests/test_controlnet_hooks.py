"""The ControlNet hooks on the real tiny UNet and tiny ControlNet: residual scaling, the reference
write/read machine (checked against attention and statistics computed here), and the latent corrections."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from knsd.serve.addons.controlnet.latents import abar_at, colorfix, eps_from_x0, inpaint_restore, x0_from_eps
from knsd.serve.addons.controlnet.plan import Geometry, Plan, _fitted
from knsd.serve.addons.controlnet.reference import adain_blocks, attention_blocks
from knsd.serve.addons.controlnet.residuals import Scaling, unit_view
from knsd.serve.addons.controlnet.session import ControlSession
from knsd.serve.addons.controlnet.units import parse_unit
from knsd.serve.addons.tiny import controlnet_model


@pytest.fixture(scope="module")
def unet(tiny_model: Any) -> Any:
    return tiny_model.txt2img.unet


def _inputs(unet: Any, batch: int = 2, size: int = 16) -> tuple[Any, Any, Any]:
    g = torch.Generator().manual_seed(0)
    sample = torch.randn((batch, 4, size, size), generator=g)
    context = torch.randn((batch, 77, unet.config.cross_attention_dim), generator=g)
    return sample, torch.tensor(500.0), context


def test_unit_view_scales_residuals(unet: Any) -> None:
    net = controlnet_model(unet)
    sample, t, context = _inputs(unet)
    cond = torch.rand((2, 3, 128, 128), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        down, mid = net(sample, t, context, cond, return_dict=False)
        plain = [*down, mid]

        def through(scaling: Scaling | None) -> list[Any]:
            view = unit_view(net, lambda: scaling, lambda s: s.shape[0] // 2)
            d, m = view(sample, t, context, cond, return_dict=False)
            return [*d, m]

        soft = through(Scaling(weight=0.5, soft=True, cond_only=False))
        for i, (p, s) in enumerate(zip(plain, soft, strict=True)):
            torch.testing.assert_close(s, p * 0.5 * 0.825 ** (12 - i))
        advanced = through(Scaling(1.0, soft=True, cond_only=False, advanced=(2.0, 0.5)))
        torch.testing.assert_close(advanced[0], plain[0] * 2.0)
        torch.testing.assert_close(advanced[1], plain[1] * 0.5)
        assert all(not r.any() for r in advanced[2:])  # past the list: dropped
        control = through(Scaling(1.0, soft=False, cond_only=True))
        assert all(not r[:1].any() and torch.equal(r[1:], p[1:]) for r, p in zip(control, plain, strict=True))
        region = torch.zeros((1, 1, 4, 4))
        region[..., :2, :] = 1  # the top half
        masked = through(Scaling(1.0, soft=False, cond_only=False, region=region))
        # 4 rows -> 16 bilinearly (half-pixel centres): row j reads source row (j + 0.5) / 4 - 0.5, so rows
        # 0-5 have weight 1, row 7 weight 1 - 0.375 = 0.625 and rows 10-15 weight 0
        first = masked[0]
        torch.testing.assert_close(first[..., :6, :], plain[0][..., :6, :])
        torch.testing.assert_close(first[..., 7, :], plain[0][..., 7, :] * 0.625)
        assert not first[..., 10:, :].any()
        off = through(None)
        assert all(r.shape == p.shape and not r.any() for r, p in zip(off, plain, strict=True))
        pooled = through(Scaling(1.0, soft=False, cond_only=False, pool=True))
        torch.testing.assert_close(pooled[0][1:], plain[0][1:].mean(dim=(2, 3), keepdim=True))


def _plan(module: str, weight: float, image: np.ndarray, **fields: Any) -> Plan:
    raw = {"module": module, "model": "None", "weight": weight, **fields}
    unit = parse_unit(raw, 0, "unit", lambda m, f: None)
    rgba = np.concatenate([image, np.zeros((*image.shape[:2], 1), np.uint8)], axis=2)
    fitted = _fitted(rgba[:, :, :3], False)
    return Plan(unit, "None", None, False, fitted, None)


def _session(unet: Any, vae: Any, plan: Plan) -> ControlSession:
    session = ControlSession([plan], unet, vae, Geometry(128, 128), cfg=True, xl=False, seed=0)
    session.clock.pipe = None
    return session


def _reference_image() -> np.ndarray:
    y, x = np.indices((128, 128))
    return np.stack([x * 2, y * 2, np.full_like(x, 200)], axis=-1).astype(np.uint8)


def test_adain_gives_the_reference_statistics(tiny_model: Any, unet: Any) -> None:
    """In the read pass a hooked block's output has, on conditional rows, the per-channel mean and variance
    its output had in the write pass on the noised reference."""
    plan = _plan("reference_adain", 2.0, _reference_image())
    session = _session(unet, tiny_model.txt2img.vae, plan)
    session.clock.pipe = tiny_model.txt2img
    block, rank = adain_blocks(unet)[0]  # the middle block, rank 0
    seen: list[Any] = []
    sample, t, context = _inputs(unet)
    with torch.no_grad():
        before = unet(sample, t, encoder_hidden_states=context).sample
    session.enter()
    handle = block.register_forward_hook(lambda m, a, out: seen.append(out.detach().clone()))
    try:
        with torch.no_grad():
            during = unet(sample, t, encoder_hidden_states=context).sample
    finally:
        handle.remove()
        session.exit()
    written, read = seen  # the write pass on the reference, then the real call
    var_w, mean_w = torch.var_mean(written, dim=(2, 3), correction=0)
    var_r, mean_r = torch.var_mean(read, dim=(2, 3), correction=0)
    torch.testing.assert_close(mean_r[1], mean_w[1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(var_r[1], var_w[1], atol=1e-4, rtol=1e-3)
    # the unconditional row is half its own output (style fidelity 0.5): not the reference's statistics
    assert not torch.allclose(mean_r[0], mean_w[0], atol=1e-3)
    # the hooks are gone after the session: the same call gives the plain output again
    with torch.no_grad():
        assert torch.equal(unet(sample, t, encoder_hidden_states=context).sample, before)
    assert not torch.equal(during, before)


def _attention(attn: Any, x: Any, context: Any) -> Any:
    """Multi-head attention of `x` over `context` with the layer's own projections, computed here."""
    heads = attn.heads
    q, k, v = attn.to_q(x), attn.to_k(context), attn.to_v(context)
    b, n, c = q.shape
    d = c // heads

    def split(t: Any) -> Any:
        return t.reshape(b, -1, heads, d).transpose(1, 2)

    weights = torch.softmax(split(q) @ split(k).transpose(-1, -2) * attn.scale, dim=-1)
    out = (weights @ split(v)).transpose(1, 2).reshape(b, n, c)
    return attn.to_out[1](attn.to_out[0](out))


def test_reference_attention_reads_the_written_tokens(tiny_model: Any, unet: Any) -> None:
    plan = _plan("reference_only", 2.0, _reference_image(), threshold_a=0.0)  # style fidelity 0
    session = _session(unet, tiny_model.txt2img.vae, plan)
    session.clock.pipe = tiny_model.txt2img
    block = attention_blocks(unet)[0]
    calls: list[tuple[Any, Any]] = []
    session.enter()
    handle = block.attn1.register_forward_hook(
        lambda m, a, out: calls.append((a[0].detach().clone(), out.detach().clone()))
    )
    try:
        sample, t, context = _inputs(unet)
        with torch.no_grad():
            unet(sample, t, encoder_hidden_states=context)
            (ref_tokens, _), (tokens, out) = calls
            expected = _attention(block.attn1, tokens, torch.cat([tokens, ref_tokens], dim=1))
    finally:
        handle.remove()
        session.exit()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(out, _attention(block.attn1, tokens, tokens), atol=1e-4)


def test_latent_corrections() -> None:
    g = torch.Generator().manual_seed(3)
    x_t, eps, ref = (torch.randn((2, 4, 8, 8), generator=g) for _ in range(3))
    abar = abar_at(torch.linspace(0.999, 0.01, 1000), torch.tensor(400.0), 2)
    torch.testing.assert_close(eps_from_x0(x_t, x0_from_eps(x_t, eps, abar), abar), eps, atol=1e-4, rtol=1e-4)
    cond = torch.tensor([0.0, 1.0]).reshape(2, 1, 1, 1)
    # a reference equal to the predicted x0 changes nothing (its low frequencies are already the reference's)
    torch.testing.assert_close(
        colorfix(x_t, eps, abar, x0_from_eps(x_t, eps, abar), 3, 1.0, None, cond), eps, atol=1e-4, rtol=1e-4
    )
    assert torch.equal(colorfix(x_t, eps, abar, ref, 3, 0.0, None, cond), eps)  # weight 0
    ones, zeros = torch.ones((1, 1, 8, 8)), torch.zeros((1, 1, 8, 8))
    torch.testing.assert_close(inpaint_restore(x_t, eps, abar, ref, ones, 1.0), eps, atol=1e-4, rtol=1e-4)
    # outside the mask the predicted x0 becomes the original's latent
    pulled = inpaint_restore(x_t, eps, abar, ref, zeros, 1.0)
    torch.testing.assert_close(x0_from_eps(x_t, pulled, abar), ref, atol=1e-4, rtol=1e-4)


def test_inpaint_hint_marks_masked_pixels() -> None:
    rgba = np.zeros((8, 8, 4), np.float32)
    rgba[:, :, :3] = 51.0  # 0.2
    rgba[:4, :, 3] = 255.0
    fitted = _fitted(rgba, True)
    assert torch.all(fitted.control[:, :, :4] == -1) and torch.allclose(
        fitted.control[:, :, 4:], torch.tensor(0.2)
    )
    assert (
        fitted.alpha is not None and fitted.alpha[0, 0, :4].eq(1).all() and not fitted.alpha[0, 0, 4:].any()
    )
