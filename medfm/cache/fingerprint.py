"""The cache fingerprint: sha256 of everything that determines the cached numbers.

Inputs are canonical JSON (sorted keys), so the same request always gives the same digest, and
``describe_difference`` can say which input changed when a cache does not match a request.
"""

from __future__ import annotations

import hashlib
import json


def canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def fingerprint(inputs: dict) -> str:
    return hashlib.sha256(canonical(inputs).encode()).hexdigest()


def _flatten(obj, prefix=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, json.loads(canonical(obj))


# Inputs a user recognises first: what was asked for by name, then the weights.
_PRIORITY = ("backbone.name", "dataset.name", "backbone.weights.origin", "backbone.weights.sha256", "backbone.feature")


def describe_difference(old: dict, new: dict, limit: int = 3) -> str:
    """'backbone.name: dinov2_vits14 -> mobilenetv2; ...' for the first few differing inputs."""
    a, b = dict(_flatten(old)), dict(_flatten(new))
    rank = {k: i for i, k in enumerate(_PRIORITY)}
    keys = sorted(a.keys() | b.keys(), key=lambda k: (rank.get(k, len(rank)), k))
    diffs = [f"{k}: {a.get(k, '∅')} -> {b.get(k, '∅')}" for k in keys if a.get(k) != b.get(k)]
    shown = "; ".join(diffs[:limit])
    return shown + (f" (+{len(diffs) - limit} more)" if len(diffs) > limit else "")
