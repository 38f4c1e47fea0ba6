"""One sampling pass's conditioning: prompt schedules encoded once, switched per denoiser call, and
classifier-free guidance with positive and negative conditionings of different lengths.

A1111 (`modules/sd_samplers_cfg_denoiser.py`) does not pad a 154-token positive against a 77-token
negative: it runs the UNet once for each. diffusers needs both tensors of one shape, so knsd pads them
and, while the pass runs, the UNet's forward splits the batch and cuts each half back to its length.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from knsd.errors import InvalidField
from knsd.serve.prompts.conditioning import ClipTower, Encoded, PromptOptions, encode_texts
from knsd.serve.prompts.editing import prompt_schedules, text_at_step
from knsd.serve.prompts.parser import check_attention, parse_prompt_attention, split_and

# Samplers that evaluate the model twice per step: A1111 resolves schedules over twice the steps.
SECOND_ORDER = frozenset({"Heun", "DPM2", "DPM2 a", "DPM++ SDE"})
# diffusers runs these with one UNet call per loop iteration where A1111 makes two (none since DPM++ SDE
# runs on DPMSolverSDEScheduler, which interleaves its two calls as Heun does).
_TWO_CALLS_PER_ITERATION: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Schedule:
    """(end_at_step, encoding) pairs of one prompt."""

    entries: tuple[tuple[int, Encoded], ...]

    def at(self, call: int) -> Encoded:
        return self.entries[text_at_step([(end, "") for end, _ in self.entries], call)][1]

    @property
    def length(self) -> int:
        return int(self.entries[0][1].hidden.shape[1])


def schedule_steps(sampler: str, steps: int) -> int:
    """The step count A1111 resolves `[a:b:when]` against (denoiser calls)."""
    return steps * 2 if sampler in SECOND_ORDER else steps


def check_schedule(
    prompt: str, steps: int, hires_steps: int | None, field: str, use_old_scheduling: bool = False
) -> None:
    """Refuse what `encode_schedule` could not encode (AND, malformed weights), without encoding."""
    if len(split_and(prompt)) > 1 and field == "prompt":
        raise InvalidField(
            field,
            "a prompt without AND (composable diffusion is not supported by knsd; write the parts in one prompt)",
            prompt,
        )
    schedule = _schedule(prompt, steps, hires_steps, field, use_old_scheduling)
    for _, text in schedule:
        try:
            check_attention(text)
        except ValueError as exc:  # A1111's float() of a malformed weight such as (a:1.2.3), or infinity
            raise InvalidField(
                field, "a prompt whose (text:weight) weights are finite numbers", prompt, f"{field}: {exc}"
            ) from exc


def _schedule(
    prompt: str, steps: int, hires_steps: int | None, field: str, use_old_scheduling: bool
) -> list[tuple[int, str]]:
    try:
        return prompt_schedules(prompt, steps, hires_steps, use_old_scheduling)
    except ValueError as exc:  # [a:b:1e999]
        raise InvalidField(
            field, "a prompt whose [from:to:when] steps are finite numbers", prompt, f"{field}: {exc}"
        ) from exc


def encode_schedule(
    towers: list[ClipTower],
    prompt: str,
    steps: int,
    opts: PromptOptions,
    hires_steps: int | None = None,
    field: str = "prompt",
    zero: bool = False,
    use_old_scheduling: bool = False,
) -> Schedule:
    """Encode every text a prompt's schedule produces, in one call (A1111's get_learned_conditioning)."""
    check_schedule(prompt, steps, hires_steps, field, use_old_scheduling)
    schedule = prompt_schedules(prompt, steps, hires_steps, use_old_scheduling)
    encoded = encode_texts(towers, [text for _, text in schedule], opts, zero=zero)
    entries = []
    for i, (end, _) in enumerate(schedule):
        pooled = encoded.pooled[i : i + 1] if encoded.pooled is not None else None
        entries.append((end, Encoded(encoded.hidden[i : i + 1], pooled)))
    return Schedule(tuple(entries))


def require_plain_prompt(
    prompt: str, field: str, opts: PromptOptions, steps: int, tokenizer: Any = None
) -> None:
    """For families whose prompts diffusers encodes (SD 3.x): refuse syntax that would be read as text."""
    family = "SD 3.x models"
    try:
        parsed = parse_prompt_attention(prompt)
    except ValueError:
        parsed = [("", 0.0)]
    weighted = any(w != 1.0 for _, w in parsed)
    if weighted or len(_schedule(prompt, steps, None, field, False)) > 1 or len(split_and(prompt)) > 1:
        raise InvalidField(
            field,
            f"plain text on {family}: emphasis (), [], BREAK, prompt editing and AND are supported on SD 1.x, "
            "2.x and SDXL only",
            prompt,
        )
    if tokenizer is not None:
        count = len(tokenizer(prompt, truncation=False, add_special_tokens=False)["input_ids"])
        if count > 75:
            raise InvalidField(
                field,
                f"at most 75 CLIP tokens on {family} (knsd does not split SD 3.x prompts into chunks)",
                f"{count} tokens",
            )
    if opts.clip_skip > 1:
        raise InvalidField(
            "override_settings.CLIP_stop_at_last_layers",
            f"1 on {family} (clip skip is not supported)",
            opts.clip_skip,
        )


def _pad(hidden: Any, length: int) -> Any:
    import torch

    if hidden.shape[1] == length:
        return hidden
    extra = hidden.new_zeros((hidden.shape[0], length - hidden.shape[1], hidden.shape[2]))
    return torch.cat([hidden, extra], dim=1)


@dataclass(frozen=True, slots=True)
class PassConds:
    """Positive and negative schedules for one pass over `batch` images."""

    positive: Schedule
    negative: Schedule
    batch: int
    sampler: str

    @property
    def length(self) -> int:
        return max(self.positive.length, self.negative.length)

    def switches(self) -> bool:
        return len(self.positive.entries) > 1 or len(self.negative.entries) > 1

    def pipeline_kwargs(self, call: int = 0) -> dict[str, Any]:
        """prompt_embeds / negative_prompt_embeds (+ pooled) for the call, padded to one length."""
        pos, neg = self.positive.at(call), self.negative.at(call)
        n = self.batch
        kwargs: dict[str, Any] = {
            "prompt_embeds": _pad(pos.hidden, self.length).repeat(n, 1, 1),
            "negative_prompt_embeds": _pad(neg.hidden, self.length).repeat(n, 1, 1),
        }
        if pos.pooled is not None:
            kwargs["pooled_prompt_embeds"] = pos.pooled.repeat(n, 1)
            kwargs["negative_pooled_prompt_embeds"] = neg.pooled.repeat(n, 1)
        return kwargs

    def call_index(self, iteration: int) -> int:
        """A1111's denoiser call counter at the start of diffusers loop `iteration`."""
        return iteration * (2 if self.sampler in _TWO_CALLS_PER_ITERATION else 1)

    def step_tensors(self, pipeline: Any, iteration: int, tensors: dict[str, Any]) -> None:
        """Swap in the conditioning for the next loop iteration (called from callback_on_step_end)."""
        import torch

        kw = self.pipeline_kwargs(self.call_index(iteration))
        cfg = bool(getattr(pipeline, "do_classifier_free_guidance", True))
        if "prompt_embeds" in tensors:
            pos, neg = kw["prompt_embeds"], kw["negative_prompt_embeds"]
            tensors["prompt_embeds"] = torch.cat([neg, pos]) if cfg else pos
        if "add_text_embeds" in tensors and "pooled_prompt_embeds" in kw:
            pos, neg = kw["pooled_prompt_embeds"], kw["negative_pooled_prompt_embeds"]
            tensors["add_text_embeds"] = torch.cat([neg, pos]) if cfg else pos

    def tensor_inputs(self, pipeline: Any) -> list[str]:
        """The callback tensors to ask diffusers for (only what schedules need to switch)."""
        if not self.switches():
            return ["latents"]
        wanted = ["latents", "prompt_embeds", "add_text_embeds"]
        return [k for k in wanted if k in getattr(pipeline, "_callback_tensor_inputs", ["latents"])]


def _split(value: Any, part: slice, batch: int) -> Any:
    import torch

    if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == batch:
        return value[part]
    if isinstance(value, dict):
        return {k: _split(v, part, batch) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_split(v, part, batch) for v in value)
    return value


@contextmanager
def uneven_cfg(unet: Any, negative_length: int, positive_length: int) -> Iterator[None]:
    """While active, a CFG batch [negative..., positive...] runs as two UNet calls at their own lengths."""
    if negative_length == positive_length:
        yield
        return
    import torch

    original = unet.forward

    def forward(sample: Any, timestep: Any, encoder_hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
        batch = sample.shape[0]
        if batch % 2 or encoder_hidden_states.shape[0] != batch:
            return original(sample, timestep, encoder_hidden_states, *args, **kwargs)
        half = batch // 2
        outs = []
        for part, length in ((slice(0, half), negative_length), (slice(half, None), positive_length)):
            outs.append(
                original(
                    sample[part],
                    _split(timestep, part, batch),
                    encoder_hidden_states[part, :length],
                    *_split(tuple(args), part, batch),
                    **_split(kwargs, part, batch),
                )
            )
        first = outs[0][0] if isinstance(outs[0], tuple) else outs[0].sample
        second = outs[1][0] if isinstance(outs[1], tuple) else outs[1].sample
        joined = torch.cat([first, second])
        if isinstance(outs[0], tuple):
            return (joined,)
        return type(outs[0])(sample=joined)

    saved = unet.__dict__.get("forward")  # someone else's per-instance patch, if any
    unet.forward = forward
    try:
        yield
    finally:
        if saved is None:
            del unet.forward
        else:
            unet.forward = saved
