"""A1111-style conditioning on the tiny model's real CLIP: chunks, emphasis, clip skip, schedules, CFG."""

from __future__ import annotations

import pytest
import torch

from knsd.errors import InvalidField
from knsd.serve.prompts.chunks import CHUNK_LENGTH, TokenIds, tokenize_line
from knsd.serve.prompts.conditioning import PromptOptions, check_clip_skip, encode_texts, towers_for
from knsd.serve.prompts.guidance import PassConds, encode_schedule, uneven_cfg

IDS = TokenIds(start=100, end=101, pad=101, comma=7)


def _fake_tokenize(texts: list[str]) -> list[list[int]]:
    # one token per character; "," is the comma token
    return [[7 if c == "," else 1 for c in t] for t in texts]


def test_chunks_pad_to_77_and_break_closes_a_chunk() -> None:
    [chunk] = tokenize_line("abc", _fake_tokenize, IDS)
    assert len(chunk.tokens) == CHUNK_LENGTH + 2
    assert chunk.tokens[:5] == [100, 1, 1, 1, 101] and chunk.tokens[-1] == 101
    chunks = tokenize_line("ab BREAK cd", _fake_tokenize, IDS)
    assert len(chunks) == 2 and chunks[1].tokens[1:3] == [1, 1]
    # an empty prompt is one chunk of BOS + EOS x 76
    assert tokenize_line("", _fake_tokenize, IDS)[0].tokens == [100] + [101] * 76


def test_weights_become_multipliers() -> None:
    [chunk] = tokenize_line("a(bb:1.5)", _fake_tokenize, IDS)
    assert chunk.multipliers[:5] == [1.0, 1.0, 1.5, 1.5, 1.0]


def test_comma_backtrack_moves_the_words_after_the_last_comma() -> None:
    text = "x" * 70 + "," + "y" * 10
    chunks = tokenize_line(text, _fake_tokenize, IDS)
    assert len(chunks) == 2
    # the comma stays in chunk 1 (position 71 after BOS), the 10 y's start chunk 2
    assert chunks[0].tokens[71] == 7 and chunks[0].tokens[72] == 101
    assert chunks[1].tokens[1:11] == [1] * 10 and chunks[1].tokens[11] == 101
    # backtrack 0 splits at exactly 75 tokens instead
    plain = tokenize_line(text, _fake_tokenize, IDS, comma_padding_backtrack=0)
    assert plain[0].tokens[72:76] == [1, 1, 1, 1]


@pytest.fixture(scope="module")
def towers(tiny_model):  # type: ignore[no-untyped-def]
    pipe = tiny_model.txt2img
    return towers_for("sd1", [pipe.tokenizer], [pipe.text_encoder])


def test_plain_prompt_matches_diffusers(tiny_model, towers) -> None:  # type: ignore[no-untyped-def]
    pipe = tiny_model.txt2img
    ours = encode_texts(towers, ["a red cat"], PromptOptions()).hidden
    theirs, _ = pipe.encode_prompt("a red cat", "cpu", 1, False)
    assert ours.shape == theirs.shape == (1, 77, theirs.shape[-1])
    assert torch.allclose(ours, theirs, atol=1e-5)
    # A1111 clip skip 2 is diffusers' clip_skip=1 (penultimate layer + final layer norm)
    ours2 = encode_texts(towers, ["a red cat"], PromptOptions(clip_skip=2)).hidden
    ids = pipe.tokenizer("a red cat", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.inference_mode():
        out = pipe.text_encoder(ids, output_hidden_states=True)
        enc = pipe.text_encoder
        theirs2 = getattr(enc, "text_model", enc).final_layer_norm(out.hidden_states[-2])
    assert torch.allclose(ours2, theirs2, atol=1e-5)
    assert not torch.allclose(ours, ours2)


def test_emphasis_and_long_prompts(towers) -> None:  # type: ignore[no-untyped-def]
    plain = encode_texts(towers, ["a red cat"], PromptOptions()).hidden
    weighted = encode_texts(towers, ["a (red:1.5) cat"], PromptOptions()).hidden
    assert not torch.allclose(plain, weighted)
    assert torch.isfinite(weighted).all()
    # the weighted token's vectors are scaled, the others are not ("No norm": multiply only)
    no_norm = encode_texts(towers, ["a (red:1.5) cat"], PromptOptions(emphasis="No norm")).hidden
    red = [
        i
        for i, m in enumerate(
            tokenize_line("a (red:1.5) cat", towers[0].tokenize, towers[0].ids)[0].multipliers
        )
        if m == 1.5
    ]
    unweighted = encode_texts(towers, ["a red cat"], PromptOptions(emphasis="Ignore")).hidden
    assert red and torch.allclose(no_norm[0, red], unweighted[0, red] * 1.5, atol=1e-5)
    ignored = encode_texts(towers, ["a (red:1.5) cat"], PromptOptions(emphasis="Ignore")).hidden
    assert torch.allclose(ignored, plain, atol=1e-5)
    long = encode_texts(towers, ["word " * 100], PromptOptions()).hidden
    assert long.shape[1] == 77 * 6  # 400 byte-level tokens in 6 chunks, no truncation


def test_clip_skip_beyond_the_encoder_is_a_422(towers) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidField) as err:
        check_clip_skip(towers, PromptOptions(clip_skip=12))
    assert "CLIP_stop_at_last_layers" in err.value.field


def test_schedule_switches_encoding_and_and_is_refused(towers) -> None:  # type: ignore[no-untyped-def]
    schedule = encode_schedule(towers, "[cat:dog:2]", 4, PromptOptions())
    assert [end for end, _ in schedule.entries] == [2, 4]
    assert torch.equal(schedule.at(2).hidden, schedule.entries[0][1].hidden)
    assert torch.equal(schedule.at(3).hidden, schedule.entries[1][1].hidden)
    with pytest.raises(InvalidField) as err:
        encode_schedule(towers, "a cat AND a dog", 4, PromptOptions())
    assert err.value.field == "prompt"


def test_uneven_lengths_run_the_unet_once_per_half(tiny_model, towers) -> None:  # type: ignore[no-untyped-def]
    unet = tiny_model.txt2img.unet
    pos = encode_schedule(towers, "word " * 20, 4, PromptOptions())  # 2 chunks
    neg = encode_schedule(towers, "", 4, PromptOptions(), field="negative_prompt")  # 1 chunk
    conds = PassConds(pos, neg, 1, "Euler")
    kw = conds.pipeline_kwargs(0)
    assert kw["prompt_embeds"].shape[1] == kw["negative_prompt_embeds"].shape[1] == 154
    sample = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    hidden = torch.cat([kw["negative_prompt_embeds"], kw["prompt_embeds"]])
    t = torch.tensor(500)
    with torch.inference_mode():
        with uneven_cfg(unet, neg.length, pos.length):
            joined = unet(sample, t, encoder_hidden_states=hidden, return_dict=False)[0]
        assert "forward" not in unet.__dict__
        alone_neg = unet(sample[:1], t, encoder_hidden_states=neg.at(0).hidden, return_dict=False)[0]
        alone_pos = unet(sample[1:], t, encoder_hidden_states=pos.at(0).hidden, return_dict=False)[0]
    assert torch.allclose(joined, torch.cat([alone_neg, alone_pos]), atol=1e-5)
