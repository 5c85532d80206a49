"""One exception type for everything a user can fix.

The CLI prints a ``MedfmError`` as one line — what went wrong, then how to fix it — and exits
with status 2, instead of a traceback. Anything else escaping is a bug in medfm.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MedfmError(Exception):
    """A problem with the user's input or environment, with the fix spelled out."""

    def __init__(self, problem: str, fix: str | None = None):
        self.problem = problem
        self.fix = fix
        super().__init__(problem if not fix else f"{problem} — {fix}")


def close_matches(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Registry names that look like ``name`` (typos, wrong separators, wrong case)."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5)
    # Prefix matches catch 'dinov2' -> 'dinov2_vits14', which difflib ranks low.
    hits += [c for c in lowered if c.startswith(name.lower()) and c not in hits]
    return [lowered[h] for h in hits[:n]]


def unknown_name(kind: str, name: str, choices: Iterable[str], list_command: str) -> MedfmError:
    """The error for a name that is not in a registry, with close-match suggestions."""
    choices = list(choices)
    sugg = close_matches(name, choices)
    did_you_mean = f"did you mean {', '.join(repr(s) for s in sugg)}? " if sugg else ""
    return MedfmError(f"unknown {kind} {name!r}", f"{did_you_mean}`{list_command}` lists all {len(choices)}")
