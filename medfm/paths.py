"""Where medfm looks for data, weights and caches.

Precedence, everywhere: an explicit option, then an environment variable, then a default. The
``../shared`` defaults serve a checkout that sits beside the shared folder (developers and CI);
a user's fresh clone has none and gets a clear error naming the option to set.
"""

from __future__ import annotations

import os
from pathlib import Path

from medfm.errors import MedfmError

DATA_ENV = "MEDFM_DATA"
WEIGHTS_ENV = "MEDFM_WEIGHTS"
CACHE_ENV = "MEDFM_CACHE"
RUNS_ENV = "MEDFM_RUNS"

_REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_candidates(sub: str) -> list[Path]:
    return [Path.cwd().parent / "shared" / sub, _REPO_ROOT.parent / "shared" / sub]


def find_data_root(explicit: str | Path | None = None) -> Path | None:
    """The folder holding datasets, or None when nothing is configured or found."""
    if explicit is not None:
        return Path(explicit).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return next((p for p in _shared_candidates("data") if p.is_dir()), None)


def require_data_root(explicit: str | Path | None = None) -> Path:
    root = find_data_root(explicit)
    if root is None:
        raise MedfmError(
            "no data folder found (looked at --data-root, $MEDFM_DATA and ../shared/data)",
            "pass --data-root DIR or set MEDFM_DATA=DIR, or give --dataset a path to a CSV manifest or image folder",
        )
    if not root.is_dir():
        raise MedfmError(f"data folder {root} does not exist", "check --data-root / $MEDFM_DATA")
    return root


def find_weights_root() -> Path | None:
    """The folder of local pretrained weights ($MEDFM_WEIGHTS or ../shared/weights), if any."""
    if os.environ.get(WEIGHTS_ENV):
        return Path(os.environ[WEIGHTS_ENV]).expanduser()
    return next((p for p in _shared_candidates("weights") if p.is_dir()), None)


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV, "medfm-cache")).expanduser()


def runs_root() -> Path:
    return Path(os.environ.get(RUNS_ENV, "medfm-runs")).expanduser()
