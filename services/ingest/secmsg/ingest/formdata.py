"""Streaming ``multipart/form-data`` reader over python-multipart's push parser.

The parser's callbacks are synchronous, so they only queue small events; the async caller
drains them after each chunk it feeds. Nothing is spooled: part data goes out as it arrives,
at most one request chunk at a time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from secmsg.shared.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType


@dataclass
class PartStart:
    name: str
    filename: str | None
    content_type: str | None


@dataclass
class PartEnd:
    pass


Event = PartStart | bytes | PartEnd


def boundary_of(content_type: str | None) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type, or 415 / 400."""
    mime, params = parse_options_header(content_type or "")
    if mime != b"multipart/form-data":
        raise UnsupportedMediaType("the request body must be multipart/form-data")
    boundary = params.get(b"boundary")
    if not boundary or len(boundary) > 70:
        raise InvalidInput("multipart/form-data needs a boundary of 1 to 70 characters")
    return boundary


@dataclass
class _Collector:
    events: list[Event] = field(default_factory=list)
    headers: dict[bytes, bytes] = field(default_factory=dict)
    header_field: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    ended: bool = False
    error: str | None = None

    def on_part_begin(self) -> None:
        self.headers = {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[bytes(self.header_field).strip().lower()] = bytes(self.header_value).strip()
        self.header_field.clear()
        self.header_value.clear()

    def on_headers_finished(self) -> None:
        disp, params = parse_options_header(self.headers.get(b"content-disposition"))
        if disp != b"form-data" or b"name" not in params:
            self.error = "every part needs 'Content-Disposition: form-data; name=...'"
            return
        filename = params.get(b"filename")
        ctype = self.headers.get(b"content-type")
        self.events.append(PartStart(
            name=params[b"name"].decode("utf-8", "replace"),
            # Browsers send raw UTF-8 in the quoted filename; headers arrive as latin-1.
            filename=None if filename is None else filename.decode("utf-8", "replace"),
            content_type=None if ctype is None else ctype.decode("latin-1")))

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if end > start:
            self.events.append(data[start:end])

    def on_part_end(self) -> None:
        self.events.append(PartEnd())

    def on_end(self) -> None:
        self.ended = True


async def iter_parts(body: AsyncIterator[bytes], boundary: bytes, *, max_size: int
                     ) -> AsyncIterator[Event]:
    """Yield ``PartStart``, data ``bytes`` and ``PartEnd`` events; 400 if malformed."""
    c = _Collector()
    parser = MultipartParser(boundary, callbacks={
        "on_part_begin": c.on_part_begin, "on_header_field": c.on_header_field,
        "on_header_value": c.on_header_value, "on_header_end": c.on_header_end,
        "on_headers_finished": c.on_headers_finished, "on_part_data": c.on_part_data,
        "on_part_end": c.on_part_end, "on_end": c.on_end,
    }, max_size=max_size)
    async for chunk in body:
        if not chunk:
            continue
        if c.ended:
            continue  # epilogue after the closing boundary is ignored
        try:
            written = parser.write(chunk)
        except FormParserError as exc:
            raise InvalidInput(f"malformed multipart body ({exc})") from None
        if c.error:
            raise InvalidInput(c.error)
        for event in c.events:
            yield event
        c.events.clear()
        if written < len(chunk):
            # Only the parser's overall size cap truncates; the caller's own limit usually
            # hits first, this is the backstop.
            raise PayloadTooLarge("the request body is larger than this tenant allows")
    if not c.ended:
        raise InvalidInput("malformed multipart body (no closing boundary)")
