"""Writing a diffusers SD 1.x pipeline as an original (LDM) single-file checkpoint, for tests.

The inverse of diffusers' `convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint` and
`convert_ldm_clip_checkpoint`, for any SD 1.x layout (levels and layers per block from the config), so the
tiny model can be loaded the way `v1-5-pruned-emaonly.safetensors` is.
"""

from __future__ import annotations

from typing import Any

_UNET_DIRECT = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
           "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}  # fmt: skip
_VAE_DIRECT = {"conv_norm_out": "norm_out"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _rename(rest: str, table: dict[str, str]) -> str:
    for new, old in table.items():
        if rest.startswith(new + "."):
            return old + rest[len(new) :]
    return rest


def unet_to_ldm(state: dict[str, Any], config: Any) -> dict[str, Any]:
    layers = config.layers_per_block
    has_attention = ["CrossAttn" in t for t in config.up_block_types]
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        head = ".".join(parts[:2])
        if head in _UNET_DIRECT or parts[0] in _UNET_DIRECT:
            name = head if head in _UNET_DIRECT else parts[0]
            out[_UNET_DIRECT[name] + key[len(name) :]] = value
            continue
        if parts[0] == "down_blocks":
            block, kind = int(parts[1]), parts[2]
            if kind == "downsamplers":
                index = 1 + block * (layers + 1) + layers
                out[f"input_blocks.{index}.0.op.{parts[-1]}"] = value
                continue
            index = 1 + block * (layers + 1) + int(parts[3])
            rest = ".".join(parts[4:])
            sub = "0." + _rename(rest, _RESNET) if kind == "resnets" else "1." + rest
            out[f"input_blocks.{index}.{sub}"] = value
        elif parts[0] == "mid_block":
            kind, number, rest = parts[1], int(parts[2]), ".".join(parts[3:])
            if kind == "resnets":
                out[f"middle_block.{0 if number == 0 else 2}.{_rename(rest, _RESNET)}"] = value
            else:
                out[f"middle_block.1.{rest}"] = value
        elif parts[0] == "up_blocks":
            block, kind = int(parts[1]), parts[2]
            if kind == "upsamplers":
                index = block * (layers + 1) + layers
                position = 2 if has_attention[block] else 1
                out[f"output_blocks.{index}.{position}.conv.{parts[-1]}"] = value
                continue
            index = block * (layers + 1) + int(parts[3])
            rest = ".".join(parts[4:])
            sub = "0." + _rename(rest, _RESNET) if kind == "resnets" else "1." + rest
            out[f"output_blocks.{index}.{sub}"] = value
        else:
            raise KeyError(f"unexpected UNet key {key}")
    return {"model.diffusion_model." + k: v for k, v in out.items()}


def vae_to_ldm(state: dict[str, Any], config: Any) -> dict[str, Any]:
    blocks = len(config.up_block_types)
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        side = parts[0]
        if side in ("quant_conv", "post_quant_conv"):
            out[key] = value
            continue
        rest = ".".join(parts[1:])
        if parts[1] in ("conv_in", "conv_out", "conv_norm_out"):
            out[f"{side}.{_rename(rest, _VAE_DIRECT)}"] = value
        elif parts[1] in ("down_blocks", "up_blocks"):
            i = int(parts[2])
            level = i if side == "encoder" else blocks - 1 - i
            name = "down" if side == "encoder" else "up"
            if parts[3] in ("downsamplers", "upsamplers"):
                sampler = "downsample" if side == "encoder" else "upsample"
                out[f"{side}.{name}.{level}.{sampler}.conv.{parts[-1]}"] = value
            else:
                tail = ".".join(parts[5:]).replace("conv_shortcut", "nin_shortcut")
                out[f"{side}.{name}.{level}.block.{parts[4]}.{tail}"] = value
        elif parts[1] == "mid_block":
            if parts[2] == "resnets":
                tail = ".".join(parts[4:]).replace("conv_shortcut", "nin_shortcut")
                out[f"{side}.mid.block_{int(parts[3]) + 1}.{tail}"] = value
            else:
                tail = _rename(".".join(parts[4:]), _VAE_ATTN)
                if value.ndim == 2:  # LDM's attention projections are 1x1 convolutions
                    value = value[:, :, None, None]
                out[f"{side}.mid.attn_1.{tail}"] = value
        else:
            raise KeyError(f"unexpected VAE key {key}")
    return {"first_stage_model." + k: v for k, v in out.items()}


def pipeline_to_ldm(pipe: Any) -> dict[str, Any]:
    """One state dict with the UNet, VAE and CLIP text encoder under their LDM names."""
    state = {}
    state.update(unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config))
    state.update(vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config))
    # Real SD 1.x files name the text encoder as transformers 4 did: cond_stage_model.transformer.text_model.*
    for key, value in pipe.text_encoder.state_dict().items():
        name = key if key.startswith("text_model.") else "text_model." + key
        state["cond_stage_model.transformer." + name] = value
    return {k: v.contiguous() for k, v in state.items()}
