"""A1111-style text conditioning on the model's own CLIP encoders: chunks, emphasis, clip skip, pooled.

Follows AUTOMATIC1111/stable-diffusion-webui `modules/sd_hijack_clip.py` (FrozenCLIPEmbedderWithCustomWords
and its SDXL/OpenCLIP variants) and `modules/sd_emphasis.py`:
- every chunk of 77 tokens is encoded separately, outputs concatenated along the token axis;
- SD1 (CLIP-L): clip skip N > 1 takes `hidden_states[-N]` and re-applies the final layer norm;
- SD2 (OpenCLIP-H, diffusers already dropped its last layer): last hidden state, clip skip not used;
- SDXL: CLIP-L and OpenCLIP-bigG penultimate hidden states (no final norm) side by side on the channel axis,
  pooled vector from bigG's projection of the first chunk; an all-empty negative prompt is zeros.
- emphasis "Original": z x multiplier per token, then z x (mean before / mean after) over the whole chunk
  batch of one call (the schedule variants of one prompt are one call).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from knsd.errors import InvalidField
from knsd.serve.prompts.chunks import TokenIds, chunk_batches, pad_ids_after_end, tokenize_line


@dataclass(frozen=True, slots=True)
class PromptOptions:
    """The settings that change how a prompt is encoded (A1111 option keys in comments)."""

    clip_skip: int = 1  # CLIP_stop_at_last_layers
    emphasis: str = "Original"  # emphasis
    comma_padding_backtrack: int = 20  # comma_padding_backtrack
    sdxl_clip_l_skip: bool = False  # sdxl_clip_l_skip


@dataclass(frozen=True, slots=True)
class Encoded:
    """Encoded texts: hidden states (B, 77 x chunks, C) and, for SDXL, pooled vectors (B, P)."""

    hidden: Any
    pooled: Any = None


@dataclass(frozen=True, slots=True)
class ClipTower:
    """One CLIP text encoder and how A1111 reads its output."""

    tokenizer: Any
    encoder: Any
    ids: TokenIds
    layer: str  # "clip_skip" (SD1), "last" (SD2), "penultimate" (SDXL)
    pooled: bool = False

    @classmethod
    def of(cls, tokenizer: Any, encoder: Any, layer: str, pooled: bool = False) -> ClipTower:
        vocab = tokenizer.get_vocab()
        end = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end
        ids = TokenIds(tokenizer.bos_token_id, end, pad, vocab.get(",</w>"))
        return cls(tokenizer, encoder, ids, layer, pooled)

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        return list(self.tokenizer(texts, truncation=False, add_special_tokens=False)["input_ids"])

    def layers(self) -> int:
        return int(self.encoder.config.num_hidden_layers)


def towers_for(family: str, tokenizers: list[Any], encoders: list[Any]) -> list[ClipTower]:
    """The CLIP towers A1111 uses for a model family ("sd1", "sd2", "sdxl")."""
    if family == "sdxl":
        return [
            ClipTower.of(tokenizers[0], encoders[0], "penultimate"),
            ClipTower.of(tokenizers[1], encoders[1], "penultimate", pooled=True),
        ]
    return [ClipTower.of(tokenizers[0], encoders[0], "last" if family == "sd2" else "clip_skip")]


def check_clip_skip(towers: list[ClipTower], opts: PromptOptions) -> None:
    """Clip skip past the encoder's depth is refused (A1111 would fail with an IndexError)."""
    depth = towers[0].layers()
    if not 1 <= opts.clip_skip <= max(depth, 1):
        raise InvalidField(
            "override_settings.CLIP_stop_at_last_layers",
            f"an integer between 1 and {depth} (this model's text encoder has {depth} layers)",
            opts.clip_skip,
        )


def _hidden(tower: ClipTower, tokens: Any, opts: PromptOptions) -> tuple[Any, Any]:
    out = tower.encoder(input_ids=tokens, output_hidden_states=True)
    pooled = out.text_embeds if tower.pooled else None
    if tower.layer == "last":
        return out.last_hidden_state, pooled
    if tower.layer == "penultimate":
        if opts.sdxl_clip_l_skip and not tower.pooled:
            return out.hidden_states[-opts.clip_skip], pooled
        return out.hidden_states[-2], pooled
    if opts.clip_skip > 1:
        z = out.hidden_states[-opts.clip_skip]
        # transformers 5 puts final_layer_norm on the model itself, 4.x under `.text_model`.
        norm = getattr(tower.encoder, "text_model", tower.encoder).final_layer_norm
        return norm(z), pooled
    return out.last_hidden_state, pooled


def _encode_tower(tower: ClipTower, texts: list[str], opts: PromptOptions, device: Any) -> Encoded:
    import torch

    chunked = [
        tokenize_line(t, tower.tokenize, tower.ids, opts.comma_padding_backtrack, opts.emphasis)
        for t in texts
    ]
    zs, pooled = [], None
    for batch in chunk_batches(chunked, tower.ids):
        tokens = torch.tensor([pad_ids_after_end(c.tokens, tower.ids) for c in batch], device=device)
        z, pool = _hidden(tower, tokens, opts)
        if pooled is None:
            pooled = pool  # A1111 takes the pooled vector of the first chunk only
        if opts.emphasis in ("Original", "No norm"):
            mults = torch.tensor([c.multipliers for c in batch], device=device, dtype=z.dtype)
            before = z.mean()
            z = z * mults.unsqueeze(-1)
            after = z.mean()
            # A zero-mean output (an untrained final layer norm, as in knsd's tiny models) would make
            # A1111's ratio blow up; real checkpoints never get near this guard.
            if opts.emphasis == "Original" and after.abs() > 1e-4 * z.abs().mean():
                z = z * (before / after)
        zs.append(z)
    return Encoded(torch.cat(zs, dim=1), pooled)


def encode_texts(
    towers: list[ClipTower], texts: list[str], opts: PromptOptions, zero: bool = False
) -> Encoded:
    """Encode texts in one call (shared emphasis mean); SDXL towers are joined on the channel axis."""
    import torch

    device = towers[0].encoder.device
    with torch.inference_mode():
        parts = [_encode_tower(t, texts, opts, device) for t in towers]
        hidden = parts[0].hidden if len(parts) == 1 else torch.cat([p.hidden for p in parts], dim=-1)
        pooled = next((p.pooled for p in parts if p.pooled is not None), None)
        if zero:
            hidden = torch.zeros_like(hidden)
            pooled = torch.zeros_like(pooled) if pooled is not None else None
    return Encoded(hidden, pooled)
