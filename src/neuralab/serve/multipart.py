"""A multipart/form-data body already in memory → its parts, parsed synchronously (so that it
runs in the server's preparation threads, not on the event loop as Starlette's async
`request.form()` does), with python-multipart's parser: the one Starlette uses.

Example:
    >>> parts = parse_multipart(body, "multipart/form-data; boundary=xyz", max_files=65)
    >>> [(part.name, part.filename, len(part.data)) for part in parts]
    [('file', 'seven.png', 231)]
"""

from __future__ import annotations

from dataclasses import dataclass, field

try:  # the module is `python_multipart` since python-multipart 0.0.13, `multipart` before
    import python_multipart as multipart_module
    from python_multipart.exceptions import MultipartParseError
    from python_multipart.multipart import parse_options_header
except ImportError:  # pragma: no cover - older python-multipart
    import multipart as multipart_module
    from multipart.exceptions import MultipartParseError
    from multipart.multipart import parse_options_header


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data (the server answers 422 with why)."""


@dataclass
class Part:
    """One part of a form: its field name, its file name (None for a plain field) and bytes."""

    name: str
    filename: str | None = None
    data: bytearray = field(default_factory=bytearray)


class PartCollector:
    """python-multipart's callbacks, gathering the parts of one body."""

    def __init__(self, max_files: int) -> None:
        self.parts: list[Part] = []
        self.max_files, self.files = max_files, 0
        self.header_name, self.header_value = b"", b""
        self.disposition = b""

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
        }

    def on_part_begin(self) -> None:
        self.disposition = b""

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        self.parts[-1].data += data[start:end]

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        if self.header_name.lower() == b"content-disposition":
            self.disposition = self.header_value
        self.header_name, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.disposition)
        if b"name" not in options:
            raise MultipartError('a part\'s Content-Disposition header has no "name"')
        filename = options.get(b"filename")
        if filename is not None:
            self.files += 1
            if self.files > self.max_files:  # stop reading: the caller names the real limit
                raise TooManyFiles
            filename = filename.decode("utf-8", "replace")
        self.parts.append(Part(options[b"name"].decode("utf-8", "replace"), filename))


class TooManyFiles(Exception):
    """More file parts than max_files: parsing stops there."""


def parse_multipart(body: bytes, content_type: str, max_files: int) -> list[Part]:
    """The parts of a multipart/form-data body, at most `max_files` of them files.

    Args:
        body: the whole request body.
        content_type: its Content-Type header (it holds the boundary).
        max_files: parsing stops after this many file parts (the rest is not read).

    Raises:
        MultipartError: no boundary, or a malformed body.
    """
    _, parameters = parse_options_header(content_type)
    boundary = parameters.get(b"boundary")
    if not boundary:
        raise MultipartError("the Content-Type multipart/form-data has no boundary")
    collector = PartCollector(max_files)
    try:
        parser = multipart_module.MultipartParser(boundary, collector.callbacks())
        parser.write(body)
        parser.finalize()
    except TooManyFiles:
        pass
    except MultipartParseError as error:
        raise MultipartError(str(error)) from None
    return collector.parts
