"""Server-sent events (the WHATWG ``text/event-stream`` format), both ways.

Only what the revocation feed uses: ``id``, ``event`` and one-line ``data``
fields, comments, and the blank line that ends a message. Values never
contain line breaks (the feed's data is a compact JWS), so a message is
written and read without escaping.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MAX_LINE", "Message", "Parser", "encode"]

MAX_LINE = 64 * 1024  # bytes; a feed message is a few hundred


@dataclass(frozen=True)
class Message:
    event: str
    data: str
    id: str | None = None


def _clean(value: str, what: str) -> str:
    if "\n" in value or "\r" in value or "\x00" in value:
        raise ValueError(f"an event-stream {what} cannot contain line breaks or NUL")
    return value


def encode(message: Message) -> bytes:
    """One message as event-stream bytes, ending with the blank line that dispatches it."""
    lines = []
    if message.id is not None:
        lines.append(f"id: {_clean(message.id, 'id')}")
    lines.append(f"event: {_clean(message.event, 'event name')}")
    lines.append(f"data: {_clean(message.data, 'data')}")
    return ("\n".join(lines) + "\n\n").encode("utf-8")


class Parser:
    """Feed it lines (without their line ending); it returns each message when dispatched."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def line(self, text: str) -> Message | None:
        if text == "":
            if not self._data:
                self._event, self._id = "", None
                return None
            message = Message(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data, self._id = "", [], None
            return message
        if text.startswith(":"):
            return None  # a comment
        name, _, value = text.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\x00" not in value:
            self._id = value
        return None
