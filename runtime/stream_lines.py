"""Input lines for ``edgernn stream``, read piece by piece so that no line has to be held whole. numpy-free.

A ``Line`` hands out its text in pieces of at most ``PIECE_BYTES`` bytes (decoded as UTF-8 across piece
boundaries, the line end removed), or whole up to a stated length (``text``). A character model feeds a
10 MB line piece by piece in bounded memory; a CSV or JSON row longer than ``MAX_ROW_CHARS`` is refused
without reading it whole. Every error is an InputError without the line number (the reader adds it).
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from edgernn.runtime.errors import InputError

PIECE_BYTES = 64 * 1024  # bytes read at a time from a file; a longer line comes in several pieces
MAX_ROW_CHARS = (
    1024 * 1024
)  # a CSV or JSON row is at most this long (a character model's line is not bounded)


class Line:
    """One input line (``number`` counts from 1): its text in pieces, or whole up to a length."""

    def __init__(self, number: int, pieces: Iterator[str]):
        self.number = number
        self._pieces = pieces

    def pieces(self) -> Iterator[str]:
        """The line's text, without its line end, in order; read once. Raises InputError for bytes that
        are not UTF-8."""
        return self._pieces

    def text(self, limit: int = MAX_ROW_CHARS) -> str:
        """The whole line, or InputError if it is longer than ``limit`` characters (the rest is not held)."""
        parts, size = [], 0
        for piece in self._pieces:
            size += len(piece)
            if size > limit:
                raise InputError(f"the line is longer than {limit:,} characters, the most a row may have")
            parts.append(piece)
        return "".join(parts)


def lines_of(items: Iterable[str | bytes]) -> Iterator[Line]:
    """One Line per item (str, or bytes decoded as UTF-8); a line end at an item's end is removed."""
    for number, item in enumerate(items, start=1):
        yield Line(number, _whole(item))


def _whole(item: str | bytes) -> Iterator[str]:
    if isinstance(item, bytes):
        try:
            item = item.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _not_utf8(exc) from None
    yield item.rstrip("\r\n")


def file_lines(source: BinaryIO, piece_bytes: int = PIECE_BYTES) -> Iterator[Line]:
    """The lines of a binary file (stdin, a pipe), each read in pieces of at most ``piece_bytes``. A line
    its reader left unfinished is read past (not held) before the next is read."""
    number = 0
    while True:
        first = source.readline(piece_bytes)
        if not first:
            return
        number += 1
        reader = _LineReader(source, first, piece_bytes)
        yield Line(number, reader.pieces())
        reader.skip_rest()


class _LineReader:
    def __init__(self, source: BinaryIO, first: bytes, piece_bytes: int):
        self.source, self.first, self.piece_bytes = source, first, piece_bytes
        self.ended = first.endswith(b"\n")

    def _raw(self) -> Iterator[bytes]:
        yield self.first
        while not self.ended:
            yield self._read()

    def _read(self) -> bytes:
        raw = self.source.readline(self.piece_bytes)
        self.ended = not raw or raw.endswith(b"\n")
        return raw

    def skip_rest(self) -> None:
        while not self.ended:
            self._read()

    def pieces(self) -> Iterator[str]:
        if self.ended:  # the common case: the whole line came in the first piece
            yield from _whole(self.first)
            return
        decoder = codecs.getincrementaldecoder("utf-8")()
        held = ""  # trailing "\r" of a piece: part of the line end if the line ends right after it
        for raw in self._raw():
            try:
                text = held + decoder.decode(raw, final=self.ended)
            except UnicodeDecodeError as exc:
                raise _not_utf8(exc) from None
            if self.ended:
                yield text.rstrip("\r\n")
                return
            body = text.rstrip("\r")
            held = text[len(body) :]
            if body:
                yield body


def _not_utf8(exc: UnicodeDecodeError) -> InputError:
    return InputError(f"expected UTF-8 text, got byte 0x{exc.object[exc.start]:02x}")
