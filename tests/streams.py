"""Reading server-sent events from a real HTTP response (the wire format of knsd.serve.http.events)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Event:
    """One event, or a comment (name ":" and the comment's text as data)."""

    name: str
    data: Any


def events(response: httpx.Response) -> Iterator[Event]:
    """The events and comments of a streamed response, as they arrive."""
    name, data = "message", []
    for line in response.iter_lines():
        if line == "":
            if data:
                yield Event(name, json.loads("\n".join(data)))
            name, data = "message", []
        elif line.startswith(":"):
            yield Event(":", line[1:].strip())
        else:
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)


def stream_txt2img(client: httpx.Client, url: str, body: dict[str, Any]) -> Any:
    """A streamed `POST /sdapi/v1/txt2img` (a context manager, as `client.stream`)."""
    return client.stream(
        "POST", url + "/sdapi/v1/txt2img", json=body, headers={"Accept": "text/event-stream"}, timeout=300
    )


def steps_run(url: str) -> int:
    """A server's (or pod's) count of the denoising steps it has run (its step-time histogram)."""
    text = httpx.get(url + "/metrics", timeout=10).text
    return int(float(re.search(r"^knsd_denoising_step_seconds_count (\S+)$", text, re.M).group(1)))


def leave_after(
    client: httpx.Client, url: str, body: dict[str, Any], step: int, server: str | None = None
) -> tuple[int, int]:
    """Stream `body` from `url`, read until its progress reaches `step`, then close: the client has gone.
    Returns the step count of `server` (the one generating; default `url`) before and when it left."""
    server = server or url
    before = steps_run(server)
    with stream_txt2img(client, url, body) as response:
        for event in events(response):
            if event.name == "progress" and event.data["state"]["sampling_step"] >= step:
                break
        left_at = steps_run(server)
    return before, left_at
