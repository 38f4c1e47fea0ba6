"""Server-sent events: the wire format (WHATWG HTML, "Server-sent events") and who asks for it (pure).

An event is `event: NAME` and one `data: JSON` line, ended by a blank line; JSON is written on one line, so
no data line ever needs splitting. A line starting with `:` is a comment that clients ignore: knsd sends one
when a stream opens and then whenever it has been quiet for the keep-alive interval, so proxies and Knative's
idle timeout see bytes during long steps.
"""

from __future__ import annotations

import json
from typing import Any

CONTENT_TYPE = "text/event-stream; charset=utf-8"
# No caching, no buffering by proxies that honour it (nginx: X-Accel-Buffering).
HEADERS = {"Content-Type": CONTENT_TYPE, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def event(name: str | None, data: Any) -> bytes:
    """One event; `name` None for an unnamed (`message`) event, as OpenAI's streams send."""
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def comment(text: str) -> bytes:
    """A comment line (ignored by clients): the stream's first bytes and its keep-alive."""
    return f": {text}\n\n".encode()


def wants_event_stream(accept: str | None) -> bool:
    """Whether an `Accept` header asks for `text/event-stream` (and does not refuse it with q=0)."""
    for part in (accept or "").split(","):
        media, *params = (p.strip().lower() for p in part.split(";"))
        if media != "text/event-stream":
            continue
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False
