"""Writing diffusers pipelines as original single-file checkpoints (A1111/Civitai layout): the full-size
random-weights files of `knsd bench --cold-start`, and the tiny models as single files in tests.

The inverse of diffusers' `convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint`,
`convert_ldm_clip_checkpoint`, `convert_open_clip_checkpoint` and `convert_sd3_transformer_checkpoint_to_diffusers`,
for any SD 1.x / SDXL UNet layout (levels and layers per block from the config) and any SD 3.x MMDiT, so the
tiny models can be loaded the way `v1-5-pruned-emaonly.safetensors`, `sd_xl_base_1.0.safetensors` or
`sd3.5_medium.safetensors` are.
"""

from __future__ import annotations

from typing import Any

import torch

_UNET_DIRECT = {
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "conv_in": "input_blocks.0.0",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
    "add_embedding.linear_1": "label_emb.0.0",  # SDXL's pooled-text and size embedding
    "add_embedding.linear_2": "label_emb.0.2",
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


def _clip_hf(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A transformers CLIP text model under `prefix`, with the `text_model.` names transformers 4 used."""
    out = {}
    for key, value in state.items():
        name = key if key.startswith(("text_model.", "text_projection")) else "text_model." + key
        out[prefix + name] = value
    return out


def _open_clip(state: dict[str, Any], prefix: str) -> dict[str, Any]:
    """A transformers CLIP text model in OpenCLIP's layout (SDXL's bigG tower): fused q/k/v, `resblocks`."""
    state = {
        k if k.startswith(("text_model.", "text_projection")) else "text_model." + k: v
        for k, v in state.items()
    }
    out = {
        prefix + "token_embedding.weight": state.pop("text_model.embeddings.token_embedding.weight"),
        prefix + "positional_embedding": state.pop("text_model.embeddings.position_embedding.weight"),
        prefix + "ln_final.weight": state.pop("text_model.final_layer_norm.weight"),
        prefix + "ln_final.bias": state.pop("text_model.final_layer_norm.bias"),
        prefix + "text_projection": state.pop("text_projection.weight").T,
    }
    layers = {int(k.split(".")[3]) for k in state if k.startswith("text_model.encoder.layers.")}
    names = {"self_attn.out_proj": "attn.out_proj", "layer_norm1": "ln_1", "layer_norm2": "ln_2",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}  # fmt: skip
    for i in sorted(layers):
        src, dst = f"text_model.encoder.layers.{i}.", f"{prefix}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            qkv = [state.pop(f"{src}self_attn.{p}_proj.{kind}") for p in "qkv"]
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(qkv)
            for new, old in names.items():
                out[f"{dst}{old}.{kind}"] = state.pop(f"{src}{new}.{kind}")
    assert not [k for k in state if k.startswith("text_model.")], state.keys()
    return out


def sdxl_to_ldm(pipe: Any) -> dict[str, Any]:
    """An SDXL pipeline as `sd_xl_base_1.0.safetensors` lays it out."""
    state = {}
    state.update(unet_to_ldm(pipe.unet.state_dict(), pipe.unet.config))
    state.update(vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config))
    state.update(_clip_hf(pipe.text_encoder.state_dict(), "conditioner.embedders.0.transformer."))
    state.update(_open_clip(pipe.text_encoder_2.state_dict(), "conditioner.embedders.1.model."))
    return {k: v.contiguous() for k, v in state.items()}


def _swap(weight: Any) -> Any:
    """diffusers stores AdaLN (shift, scale) as (scale, shift) where the block ends; the swap is its own inverse."""
    shift, scale = weight.chunk(2, dim=0)
    return torch.cat([scale, shift])


def mmdit_to_ldm(state: dict[str, Any], layers: int) -> dict[str, Any]:
    """An SD3Transformer2DModel state dict in Stability's MMDiT layout (`joint_blocks`, fused qkv)."""
    s = dict(state)
    out = {
        "pos_embed": s.pop("pos_embed.pos_embed"),
        "x_embedder.proj.weight": s.pop("pos_embed.proj.weight"),
        "x_embedder.proj.bias": s.pop("pos_embed.proj.bias"),
        "final_layer.linear.weight": s.pop("proj_out.weight"),
        "final_layer.linear.bias": s.pop("proj_out.bias"),
        "final_layer.adaLN_modulation.1.weight": _swap(s.pop("norm_out.linear.weight")),
        "final_layer.adaLN_modulation.1.bias": _swap(s.pop("norm_out.linear.bias")),
    }
    direct = {"time_text_embed.timestep_embedder.linear_": "t_embedder.mlp.",
              "time_text_embed.text_embedder.linear_": "y_embedder.mlp.", "context_embedder.": "context_embedder."}  # fmt: skip
    for key in [k for k in s if not k.startswith("transformer_blocks.")]:
        for new, old in direct.items():
            if key.startswith(new):
                rest = key[len(new) :]
                if old.endswith("mlp."):  # linear_1 -> mlp.0, linear_2 -> mlp.2
                    rest = {"1": "0", "2": "2"}[rest[0]] + rest[1:]
                out[old + rest] = s.pop(key)
    for i in range(layers):
        b, j = f"transformer_blocks.{i}.", f"joint_blocks.{i}."
        last = i == layers - 1
        for kind in ("weight", "bias"):
            out[f"{j}x_block.attn.qkv.{kind}"] = torch.cat([s.pop(f"{b}attn.to_{p}.{kind}") for p in "qkv"])
            out[f"{j}context_block.attn.qkv.{kind}"] = torch.cat(
                [s.pop(f"{b}attn.add_{p}_proj.{kind}") for p in "qkv"]
            )
            out[f"{j}x_block.attn.proj.{kind}"] = s.pop(f"{b}attn.to_out.0.{kind}")
            out[f"{j}x_block.adaLN_modulation.1.{kind}"] = s.pop(f"{b}norm1.linear.{kind}")
            context_norm = s.pop(f"{b}norm1_context.linear.{kind}")
            out[f"{j}context_block.adaLN_modulation.1.{kind}"] = _swap(context_norm) if last else context_norm
            out[f"{j}x_block.mlp.fc1.{kind}"] = s.pop(f"{b}ff.net.0.proj.{kind}")
            out[f"{j}x_block.mlp.fc2.{kind}"] = s.pop(f"{b}ff.net.2.{kind}")
            if not last:
                out[f"{j}context_block.attn.proj.{kind}"] = s.pop(f"{b}attn.to_add_out.{kind}")
                out[f"{j}context_block.mlp.fc1.{kind}"] = s.pop(f"{b}ff_context.net.0.proj.{kind}")
                out[f"{j}context_block.mlp.fc2.{kind}"] = s.pop(f"{b}ff_context.net.2.{kind}")
            if f"{b}attn2.to_q.{kind}" in s:  # SD 3.5 medium's dual-attention (MMDiT-X) blocks
                out[f"{j}x_block.attn2.qkv.{kind}"] = torch.cat(
                    [s.pop(f"{b}attn2.to_{p}.{kind}") for p in "qkv"]
                )
                out[f"{j}x_block.attn2.proj.{kind}"] = s.pop(f"{b}attn2.to_out.0.{kind}")
        for attn in ("attn", "attn2"):
            for side, names in (
                ("x_block", ("norm_q", "norm_k")),
                ("context_block", ("norm_added_q", "norm_added_k")),
            ):
                for name, ln in zip(names, ("ln_q", "ln_k"), strict=True):
                    key = f"{b}{attn}.{name}.weight"
                    if key in s:
                        out[f"{j}{side}.{attn}.{ln}.weight"] = s.pop(key)
    assert not s, sorted(s)
    return {"model.diffusion_model." + k: v for k, v in out.items()}


def sd3_to_ldm(pipe: Any, with_t5: bool = True) -> dict[str, Any]:
    """An SD 3.5 pipeline as `sd3.5_medium_incl_clips_t5xxlfp16.safetensors` lays it out (T5 optional)."""
    state = mmdit_to_ldm(pipe.transformer.state_dict(), pipe.transformer.config.num_layers)
    state.update(vae_to_ldm(pipe.vae.state_dict(), pipe.vae.config))
    state.update(_clip_hf(pipe.text_encoder.state_dict(), "text_encoders.clip_l.transformer."))
    state.update(_clip_hf(pipe.text_encoder_2.state_dict(), "text_encoders.clip_g.transformer."))
    if with_t5:
        for key, value in pipe.text_encoder_3.state_dict().items():
            # `shared` and `encoder.embed_tokens` are one tied tensor; a file stores two copies
            state["text_encoders.t5xxl.transformer." + key] = value.clone()
    return {k: v.contiguous() for k, v in state.items()}
