"""What one request may ask for, decided before it waits: prompt lengths and extra-network tags (pure).

The parse of a prompt is linear, but its schedule, tokens and CLIP passes grow with it, and each tag looks a
name up on the add-on volume; a request past a limit is a 422 naming the field and the flag that sets it.
"""

from __future__ import annotations

from dataclasses import dataclass

from knsd.errors import InvalidField
from knsd.serve.api.request import GenerationRequest
from knsd.serve.prompts.parser import parse_extra_networks

MAX_PROMPT_CHARS = 10_000  # A1111 prompts of a few hundred tokens are ~2,000 characters
MAX_EXTRA_NETWORKS = 32


@dataclass(frozen=True, slots=True)
class PromptLimits:
    """`--max-prompt-chars` per prompt field, `--max-extra-networks` tags per request."""

    chars: int = MAX_PROMPT_CHARS
    tags: int = MAX_EXTRA_NETWORKS


def check_text(field: str, text: str, limits: PromptLimits) -> None:
    """One prompt field within `--max-prompt-chars`."""
    if len(text) > limits.chars:
        raise InvalidField(
            field, f"at most {limits.chars} characters (--max-prompt-chars)", f"{len(text)} characters"
        )


def check_prompts(req: GenerationRequest, limits: PromptLimits) -> None:
    """Every prompt of a request within `--max-prompt-chars`, its `<type:...>` tags within
    `--max-extra-networks`."""
    fields = [("prompt", req.prompt), ("negative_prompt", req.negative_prompt)]
    tags = sum(len(found) for found in req.extra_networks.values())
    if req.hires is not None:
        fields += [("hr_prompt", req.hires.prompt), ("hr_negative_prompt", req.hires.negative_prompt)]
    for field, text in fields:
        check_text(field, text, limits)
    if req.hires is not None and req.hires.prompt != req.prompt:  # hr_prompt defaults to the prompt
        tags += sum(len(found) for found in parse_extra_networks(req.hires.prompt)[1].values())
    if tags > limits.tags:
        raise InvalidField(
            "prompt",
            f"at most {limits.tags} extra-network tags such as <lora:...> (--max-extra-networks)",
            f"{tags} tags",
        )
