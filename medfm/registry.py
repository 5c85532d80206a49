"""A tiny name -> entry registry, one per axis (backbones, datasets, heads, metrics).

Entries are plain declarative objects; the pipeline looks them up by name and never branches on
names itself (timm's ``create_model`` is the model for this).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from medfm.errors import MedfmError, unknown_name

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str, list_command: str):
        self.kind = kind
        self.list_command = list_command
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}  # short name -> registered name (``isic`` -> ``isic2019``)

    def add(self, name: str, entry: T) -> T:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} registered twice")
        self._entries[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form: ``@METRICS.register("roc_auc")``."""
        return lambda entry: self.add(name, entry)

    def alias(self, short: str, name: str) -> None:
        """``short`` means ``name`` wherever a name is looked up; listings show it beside ``name``."""
        if short in self._entries or short in self._aliases or name not in self._entries:
            raise ValueError(f"{self.kind} alias {short!r} -> {name!r} clashes or points nowhere")
        self._aliases[short] = name

    def canonical(self, name: str) -> str:
        """The registered name of ``name`` (itself, or what the alias points to)."""
        return self._aliases.get(name, name)

    def aliases_of(self, name: str) -> list[str]:
        return [short for short, full in self._aliases.items() if full == name]

    def get(self, name: str) -> T:
        try:
            return self._entries[self.canonical(name)]
        except KeyError:
            raise unknown_name(self.kind, name, [*self._entries, *self._aliases], self.list_command) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def items(self):
        return self._entries.items()

    def names(self) -> list[str]:
        return list(self._entries)


__all__ = ["Registry", "MedfmError"]
