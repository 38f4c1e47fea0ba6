"""The embedded tiny SD 3.5 model: SD 3.5 medium's structure (MMDiT with dual-attention and RMS-normed
blocks, 16 latent channels, patch 2, CLIP-L + CLIP-G + T5 text encoders, rectified flow) with tiny widths
and random weights, built deterministically offline (the T5 tokenizer's vocabulary is written here)."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

from knsd.serve.models.tiny import parts

VERSION = "tiny-sd3-v1"
SEED = 20240613
HIDDEN_L, HIDDEN_G, T5_WIDTH = 32, 48, 32


def t5_tokenizer() -> Any:
    """A small SentencePiece-style (Unigram) T5 tokenizer: specials, characters and word-initial letters."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast  # type: ignore[attr-defined]

    # T5's ids: <pad> 0, </s> 1, <unk> 2; "▁" marks a word start as in SentencePiece.
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -3.0) for c in string.printable[:94]]
    pieces += [("▁" + c, -2.5) for c in string.ascii_lowercase]
    tok = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return T5TokenizerFast(
        tokenizer_object=tok,
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_ids=0,
        model_max_length=512,
    )


def build(folder: Path) -> None:
    """Build the tiny SD 3.5 pipeline and save it as a diffusers folder."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import T5Config, T5EncoderModel

    tokenizer, vocab = parts.clip_tokenizer(folder)
    tokenizer_2, _ = parts.clip_tokenizer(folder, pad="!")
    tokenizer_3 = t5_tokenizer()
    text_encoder = parts.clip_text_encoder(SEED, vocab, HIDDEN_L, projection=True)
    with torch.no_grad():  # SD 3.x single files carry no CLIP-L projection: diffusers uses the identity
        text_encoder.text_projection.weight.copy_(torch.eye(HIDDEN_L))
    text_encoder_2 = parts.clip_text_encoder(SEED + 1, vocab, HIDDEN_G, projection=True)
    torch.manual_seed(SEED + 2)
    # Dropout must be 0 and the model in eval mode: T5 trains with dropout 0.1.
    t5_config = T5Config(vocab_size=len(tokenizer_3), d_model=T5_WIDTH, d_ff=64, d_kv=8, num_layers=2,
                         num_heads=4, feed_forward_proj="gated-gelu", dropout_rate=0.0, is_encoder_decoder=False,
                         pad_token_id=0, eos_token_id=1)  # fmt: skip
    text_encoder_3 = T5EncoderModel(t5_config).eval()  # type: ignore[no-untyped-call]  # mypy misreads diffusers/transformers
    torch.manual_seed(SEED + 3)
    transformer = SD3Transformer2DModel(  # type: ignore[attr-defined]  # mypy misreads diffusers/transformers
        sample_size=128,  # 1024 px default
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=T5_WIDTH,
        caption_projection_dim=32,  # heads x head dim
        pooled_projection_dim=HIDDEN_L + HIDDEN_G,
        pos_embed_max_size=64,  # up to 64 x 2 x 8 = 1024 px a side
        qk_norm="rms_norm",
        dual_attention_layers=(0,),
    ).eval()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=parts.vae(
            SEED + 4,
            16,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.0609,
            scaling_factor=1.5305,
        ),  # fmt: skip
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        text_encoder_3=text_encoder_3,
        tokenizer_3=tokenizer_3,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)  # type: ignore[attr-defined]  # mypy misreads diffusers/transformers
