"""An incremental parser of `text/event-stream` (the WHATWG rules), bounded in bytes (pure).

Fed the body in chunks of any size, it yields `(event, data)` for each complete event: `data:` lines joined
by newlines, `event` defaulting to `message`; comments (`:` lines, the keep-alives) and `id`/`retry` fields
are skipped. A line longer than `max_bytes` (a result event of many images is one long line) raises.
"""

from __future__ import annotations

from collections.abc import Iterator


class EventStreamTooLarge(ValueError):
    pass


class EventParser:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer known to hold no line end: big lines are scanned once
        self._event = b""
        self._data: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> Iterator[tuple[str, bytes]]:
        self._buffer += chunk
        while True:
            end = self._line_end()
            if end < 0:
                if len(self._buffer) + self._size > self.max_bytes:
                    raise EventStreamTooLarge(f"an event is larger than {self.max_bytes} bytes")
                return
            line = bytes(self._buffer[:end])
            skip = 2 if self._buffer[end : end + 2] == b"\r\n" else 1
            del self._buffer[: end + skip]
            self._scanned = 0
            event = self._line(line.rstrip(b"\r"))
            if event is not None:
                yield event

    def _line_end(self) -> int:
        newline = self._buffer.find(b"\n", self._scanned)
        carriage = self._buffer.find(b"\r", self._scanned)
        if carriage >= 0 and (newline < 0 or carriage < newline):
            if carriage == len(self._buffer) - 1:  # maybe \r\n split across chunks: wait for more
                self._scanned = carriage
                return -1
            return carriage
        if newline < 0:
            self._scanned = len(self._buffer)
        return newline

    def _line(self, line: bytes) -> tuple[str, bytes] | None:
        if not line:
            if not self._data:
                self._event = b""
                return None
            event = (self._event.decode(errors="replace") or "message", b"\n".join(self._data))
            self._event, self._data, self._size = b"", [], 0
            return event
        if line.startswith(b":"):
            return None
        name, _, value = line.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        if name == b"event":
            self._event = value
        elif name == b"data":
            self._data.append(value)
            self._size += len(value) + 1
            if self._size > self.max_bytes:
                raise EventStreamTooLarge(f"an event is larger than {self.max_bytes} bytes")
        return None
