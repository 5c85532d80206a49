"""The two kinds of store medfm writes: feature caches (``extract``) and pixel caches (``prepare``).

Both share one layout skeleton and one lifecycle (``medfm.cache.lifecycle``); a kind names its
format, its version, its data arrays (the ones written chunk by chunk and digested), the metadata
keys every reader relies on, and how messages refer to it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StoreKind:
    fmt: str  # attrs["medfm"]["format"]
    version: int  # the only format_version this medfm reads and writes
    what: str  # "feature cache", in messages
    command: str  # the command that makes it, in fixes
    option: str  # the option that names its path
    data: tuple[str, ...]  # chunked data arrays, digested chunk by chunk (in digest-column order)
    required: tuple[str, ...]  # dotted metadata keys readers use: a store lacking one is refused


# v2: per-chunk crc32c digests (`<split>/digests`), label/id digests, atomic metadata writes.
FEATURES = StoreKind(
    "medfm-feature-cache", 2, "feature cache", "medfm extract", "--cache", ("features", "tokens"),
    ("fingerprint", "fingerprint_inputs", "complete", "digests", "dataset.name", "dataset.task", "dataset.classes",
     "dataset.headline_metric", "backbone.name", "backbone.feature", "backbone.weights.origin",
     "backbone.weights.sha256", "backbone.preprocessing.input_size"),
)
PIXELS = StoreKind(
    "medfm-pixel-cache", 2, "pixel cache", "medfm prepare", "--out", ("images",),
    ("fingerprint", "fingerprint_inputs.dataset", "complete", "digests", "size", "chunk_rows"),
)
KINDS = {k.fmt: k for k in (FEATURES, PIXELS)}


def missing_keys(meta: dict, keys: tuple[str, ...]) -> list[str]:
    """The dotted ``keys`` absent from ``meta``."""
    out = []
    for key in keys:
        node = meta
        for part in key.split("."):
            if not isinstance(node, dict) or part not in node:
                out.append(key)
                break
            node = node[part]
    return out
