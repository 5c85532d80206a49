"""Opening the CSV files medfm reads (manifests, the studies' official tables) in one way.

One place for what every CSV reader needs: a UTF-8 BOM is dropped, column names are matched with
whitespace and case ignored, a missing column is reported with the header as found, and each row
carries the line it starts on (a quoted field may hold a newline), so every error names file and row.
"""

from __future__ import annotations

import csv
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
    with open(path, newline="", encoding="utf-8-sig") as f:
        yield CsvTable(path, csv.DictReader(f))
