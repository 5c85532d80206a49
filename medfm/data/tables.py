"""Opening the CSV files medfm reads (manifests, the studies' official tables) in one way.

One place for what every CSV reader needs: UTF-8 with or without a BOM is read (any other encoding
is one line saying so, never a ``UnicodeDecodeError``), column names are matched with
whitespace and case ignored, a missing column is reported with the header as found, and each row
carries the line it starts on (a quoted field may hold a newline), so every error names file and row.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from medfm.errors import MedfmError


class CsvTable:
    """An open CSV: its header (``fields`` as written, ``columns`` by normalised name) and its rows."""

    def __init__(self, path: Path, reader: csv.DictReader):
        self.path, self._reader = path, reader
        self.fields = [h for h in reader.fieldnames or [] if h is not None]
        self.columns = {h.strip().lower(): h for h in self.fields}  # normalised name -> name as written

    def has(self, name: str) -> bool:
        return name.lower() in self.columns

    def require(self, names: tuple[str, ...], fix: str) -> None:
        """Raise, naming the file and its header, unless every one of ``names`` is a column."""
        missing = [c for c in names if not self.has(c)]
        if missing:
            raise MedfmError(f"{self.path}: missing column(s) {', '.join(missing)} (header is {', '.join(self.fields)})", fix)

    def records(self) -> Iterator[tuple[int, dict]]:
        """``(line, record)`` pairs, ``line`` the 1-based line where the record starts; values as read."""
        end = self._reader.line_num
        for rec in self._reader:
            yield end + 1, rec
            end = self._reader.line_num


@contextmanager
def open_csv(path: Path, not_found: str, fix: str) -> Iterator[CsvTable]:
    """The CSV at ``path`` as a ``CsvTable``; ``MedfmError(not_found, fix)`` when there is no such file."""
    if not path.is_file():
        raise MedfmError(not_found, fix)
    text = decode_utf8(path.read_bytes(), path)
    yield CsvTable(path, csv.DictReader(io.StringIO(text, newline="")))


def decode_utf8(data: bytes, path: Path) -> str:
    """The text of a UTF-8 file (a BOM dropped); another encoding is an error saying which it looks like."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or (len(data) > 1 and b"\0" in data[:2]):
        raise MedfmError(f"{path} is UTF-16 text, not UTF-8", "save the CSV as UTF-8 (e.g. Excel: 'CSV UTF-8')")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise MedfmError(f"{path} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}; Latin-1 or "
                         "Windows-1252?)", "save the CSV as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
