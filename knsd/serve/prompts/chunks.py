"""A1111's prompt tokenization: weighted segments into 75-token chunks with comma backtrack and BREAK (pure).

Ported from AUTOMATIC1111/stable-diffusion-webui `modules/sd_hijack_clip.py` (`tokenize_line`, commit
00e09382): each (text, weight) segment from `parse_prompt_attention` is tokenized on its own, tokens are
packed 75 to a chunk, and each chunk becomes BOS + 75 tokens (padded with EOS) + EOS = 77 positions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from knsd.serve.prompts.parser import parse_prompt_attention

CHUNK_LENGTH = 75  # prompt tokens per chunk; CLIP sees 77 with BOS and EOS
EMPHASIS_MODES = ("Original", "No norm", "Ignore", "None")


@dataclass(slots=True)
class Chunk:
    """One 77-position CLIP input: token ids and the emphasis multiplier of each position."""

    tokens: list[int] = field(default_factory=list)
    multipliers: list[float] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class TokenIds:
    """The special ids of a CLIP tokenizer, as A1111 reads them."""

    start: int
    end: int
    pad: int
    comma: int | None


def empty_chunk(ids: TokenIds) -> Chunk:
    """BOS then EOS x 76: what an empty prompt (or a missing chunk) encodes."""
    return Chunk([ids.start] + [ids.end] * (CHUNK_LENGTH + 1), [1.0] * (CHUNK_LENGTH + 2))


def tokenize_line(
    line: str,
    tokenize: Callable[[list[str]], Sequence[Sequence[int]]],
    ids: TokenIds,
    comma_padding_backtrack: int = 20,
    emphasis: str = "Original",
) -> list[Chunk]:
    """A prompt (after schedules and AND) as A1111's list of 77-token chunks."""
    parsed = parse_prompt_attention(line) if emphasis != "None" else [(line, 1.0)]
    tokenized = tokenize([text for text, _ in parsed])
    chunks: list[Chunk] = []
    chunk = Chunk()
    last_comma = -1

    def next_chunk() -> None:
        nonlocal chunk, last_comma
        to_add = CHUNK_LENGTH - len(chunk.tokens)
        if to_add > 0:
            chunk.tokens += [ids.end] * to_add
            chunk.multipliers += [1.0] * to_add
        chunk.tokens = [ids.start, *chunk.tokens, ids.end]
        chunk.multipliers = [1.0, *chunk.multipliers, 1.0]
        last_comma = -1
        chunks.append(chunk)
        chunk = Chunk()

    for tokens, (text, weight) in zip(tokenized, parsed, strict=True):
        if text == "BREAK" and weight == -1:
            next_chunk()
            continue
        for token in tokens:
            if token == ids.comma:
                last_comma = len(chunk.tokens)
            elif (
                comma_padding_backtrack != 0
                and len(chunk.tokens) == CHUNK_LENGTH
                and last_comma != -1
                and len(chunk.tokens) - last_comma <= comma_padding_backtrack
            ):
                # Move the words after the last comma into the next chunk instead of splitting them.
                cut = last_comma + 1
                moved_tokens, moved_mults = chunk.tokens[cut:], chunk.multipliers[cut:]
                chunk.tokens, chunk.multipliers = chunk.tokens[:cut], chunk.multipliers[:cut]
                next_chunk()
                chunk.tokens, chunk.multipliers = moved_tokens, moved_mults
            if len(chunk.tokens) == CHUNK_LENGTH:
                next_chunk()
            chunk.tokens.append(token)
            chunk.multipliers.append(weight)
    if chunk.tokens or not chunks:
        next_chunk()
    return chunks


def pad_ids_after_end(tokens: list[int], ids: TokenIds) -> list[int]:
    """OpenCLIP towers (SD2, SDXL's second encoder) see `pad` after the first EOS instead of EOS."""
    if ids.pad == ids.end:
        return tokens
    first_end = tokens.index(ids.end)
    return tokens[: first_end + 1] + [ids.pad] * (len(tokens) - first_end - 1)


def chunk_batches(chunked: list[list[Chunk]], ids: TokenIds) -> list[list[Chunk]]:
    """Per chunk index, that chunk of every text; texts with fewer chunks get empty ones (as A1111)."""
    count = max(len(c) for c in chunked)
    return [[c[i] if i < len(c) else empty_chunk(ids) for c in chunked] for i in range(count)]
