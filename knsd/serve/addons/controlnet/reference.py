"""reference_only / reference_adain / reference_adain+attn as diffusers hooks (the extension's `hook.py`).

At every UNet call, each active reference unit first runs a *write* pass of the plain UNet on its reference
latent noised to the same timestep: self-attention layers store their input tokens ("attn"), chosen
block outputs store their per-channel mean and variance ("adain"). The real call then *reads*: self-
attention attends to its own tokens followed by the stored ones; block outputs are renormalised to the
stored statistics. The unit's weight is a depth threshold, not a multiplier: a layer takes part when its
depth rank (attention: i/N by width, widest first; AdaIN: the extension's per-block weights x 2) is
below the weight. Unconditional rows mix the plain result back in by the style fidelity.

A CFG batch may reach the layers whole or in halves (knsd runs uneven prompt lengths as two calls), so the
stores are kept by batch row: a write pass's pieces are joined into one entry, and reads take their rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Tensor = Any


@dataclass
class Machine:
    """What the hooks do right now: "read" (the default, a no-op with empty stores) or "write"."""

    attn: str = "read"
    adain: str = "read"
    threshold: float = 0.0  # the writing unit's weight
    fidelity: float = 0.0
    uncond_rows: int = 0  # rows [0, uncond_rows) of the whole batch are unconditional


@dataclass
class _Store:
    """One layer's stored references (entries of whole-batch rows) and its read cursor."""

    entries: list[Any] = field(default_factory=list)
    fidelities: list[float] = field(default_factory=list)
    pending: list[Any] = field(default_factory=list)
    cursor: int = 0

    def finish_write(self, fidelity: float) -> None:
        if self.pending:
            import torch

            if isinstance(self.pending[0], tuple):
                parts = list(zip(*self.pending, strict=True))
                self.entries.append(tuple(torch.cat(p) for p in parts))
            else:
                self.entries.append(torch.cat(self.pending))
            self.fidelities.append(fidelity)
            self.pending = []

    def take(self, rows: int) -> tuple[slice, float]:
        """The rows this call covers and the mean fidelity; the store empties once all rows are read."""
        start = self.cursor
        self.cursor += rows
        return slice(start, start + rows), sum(self.fidelities) / len(self.fidelities)

    def rows(self) -> int:
        first = self.entries[0]
        return int((first[0] if isinstance(first, tuple) else first).shape[0])

    def clear_if_read(self) -> None:
        if self.entries and self.cursor >= self.rows():
            self.clear()

    def clear(self) -> None:
        self.entries, self.fidelities, self.pending, self.cursor = [], [], [], 0


def _uncond(machine: Machine, rows: slice) -> list[int]:
    """Local indices of the unconditional rows among `rows` of the whole batch."""
    start = rows.start or 0
    return [i - start for i in range(start, rows.stop) if i < machine.uncond_rows]


class AttentionHook:
    """A processor wrapper for one self-attention (`attn1`): store in write mode, attend to the store in
    read mode."""

    def __init__(self, inner: Any, rank: float, machine: Machine) -> None:
        self.inner, self.rank, self.machine = inner, rank, machine
        self.store = _Store()

    def __call__(
        self, attn: Any, hidden_states: Tensor, encoder_hidden_states: Any = None, *args: Any, **kw: Any
    ) -> Any:
        import torch

        m = self.machine
        if m.attn == "write":
            if m.threshold > self.rank:
                self.store.pending.append(hidden_states.detach().clone())
            return self.inner(attn, hidden_states, encoder_hidden_states, *args, **kw)
        if not self.store.entries:
            return self.inner(attn, hidden_states, encoder_hidden_states, *args, **kw)
        rows, fidelity = self.store.take(hidden_states.shape[0])
        context = torch.cat([hidden_states, *(e[rows].to(hidden_states) for e in self.store.entries)], dim=1)
        out = self.inner(attn, hidden_states, context, *args, **kw)
        uncond = _uncond(m, rows)
        if uncond and fidelity > 1e-5:
            plain = self.inner(attn, hidden_states[uncond], None, *args, **kw)
            out = out.clone()
            out[uncond] = fidelity * plain + (1.0 - fidelity) * out[uncond]
        self.store.clear_if_read()
        return out


class AdainHook:
    """A forward hook on one block: store its output's statistics, or renormalise its output to them."""

    def __init__(self, rank: float, machine: Machine) -> None:
        self.rank, self.machine = rank, machine
        self.store = _Store()

    def __call__(self, module: Any, args: Any, output: Any) -> Any:
        import torch

        x = output[0] if isinstance(output, tuple) else getattr(output, "sample", output)
        m = self.machine
        y = None
        if m.adain == "write" and m.threshold > self.rank:
            var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
            self.store.pending.append((mean, var))
        elif m.adain == "read" and self.store.entries:
            rows, fidelity = self.store.take(x.shape[0])
            var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)
            std = torch.clamp(var, min=1e-6) ** 0.5
            ref_mean = sum(e[0][rows] for e in self.store.entries) / len(self.store.entries)
            ref_var = sum(e[1][rows] for e in self.store.entries) / len(self.store.entries)
            ref_std = torch.clamp(ref_var, min=1e-6) ** 0.5
            y = ((x - mean) / std) * ref_std + ref_mean
            uncond = _uncond(m, rows)
            if uncond and fidelity > 1e-5:
                y[uncond] = fidelity * x[uncond] + (1.0 - fidelity) * y[uncond]
            y = y.to(x.dtype)
            self.store.clear_if_read()
        if y is None:
            return None
        if isinstance(output, tuple):
            return (y, *output[1:])
        if hasattr(output, "sample"):
            output.sample = y
            return output
        return y


def attention_blocks(unet: Any) -> list[Any]:
    """Every transformer block of the UNet in the original LDM order (encoder, middle, decoder), widest
    first (stable): the extension's ranking of self-attention layers."""
    blocks: list[Any] = []
    for part in (*unet.down_blocks, unet.mid_block, *unet.up_blocks):
        for attention in getattr(part, "attentions", None) or []:
            blocks.extend(getattr(attention, "transformer_blocks", []))
    return sorted(blocks, key=lambda b: -int(b.norm1.normalized_shape[0]))


def adain_blocks(unet: Any) -> list[tuple[Any, float]]:
    """The blocks whose outputs AdaIN renormalises, with their depth ranks (the extension's LDM blocks:
    the middle (0), the encoder's layers below the first level (2..0 descending) and the first decoder
    layers (0..2 ascending); SD 1.x/2.x's list stops after eight decoder blocks)."""

    def layer(block: Any, j: int) -> Any:
        attentions = getattr(block, "attentions", None)
        return attentions[j] if attentions else block.resnets[j]

    inputs = [layer(block, j) for block in unet.down_blocks[1:] for j in range(len(block.resnets))]
    outputs: list[Any] = []
    for block in unet.up_blocks[:-1]:
        n = len(block.resnets)
        outputs.extend(layer(block, j) for j in range(n - 1))
        outputs.append(block.upsamplers[0] if block.upsamplers else layer(block, n - 1))
    levels, layers = len(unet.down_blocks), len(unet.down_blocks[0].resnets)
    if (levels, layers) == (4, 2):
        outputs = outputs[:8]  # the extension hooks LDM output blocks 0-7 of SD 1.x/2.x, not 8
    ranked = [(unet.mid_block, 0.0)]
    ranked += [(b, 1.0 - w / len(inputs)) for w, b in enumerate(inputs)]
    ranked += [(b, w / len(outputs)) for w, b in enumerate(outputs)]
    return [(b, 2.0 * r) for b, r in ranked]
