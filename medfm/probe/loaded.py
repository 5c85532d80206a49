"""A feature cache read once for many probes (a label-budget sweep: fractions x seeds x heads on one cache).

``medfm sweep`` runs every probe row of a (dataset, backbone) in one process. Opened one row at a time, each
probe would read and verify (crc32c of every chunk) the same pooled features and labels again; a
``LoadedCache`` reads and verifies each split once and hands every later probe the same arrays, read-only.
Everything that depends on the row stays per row, so a row's result is the one ``medfm probe`` gives alone
(same ``train_rows_sha256``, same metrics; tested): the label-budget cut and val carve (seeded), and the
standardisation, which is fitted on the row's own train rows (fitting it once on the whole train split
would change a small budget's probe).
"""

from __future__ import annotations

import numpy as np

from medfm.cache import FeatureCache


class LoadedCache(FeatureCache):
    """A ``FeatureCache`` whose labels and pooled features stay in memory after their first (verified) read.
    Token arrays are not held (they stream from disk: ``tokens`` is unchanged)."""

    def __init__(self, path, meta: dict | None = None):
        super().__init__(path, meta)
        self._held: dict[tuple[str, str], np.ndarray] = {}
        self.reads = 0  # verified reads from disk: one per split and array, however many probes ran

    def _once(self, split: str, name: str, read) -> np.ndarray:
        if (split, name) not in self._held:
            array = read(split)
            array.setflags(write=False)  # shared by every probe: none may change it
            self._held[(split, name)] = array
            self.reads += 1
        return self._held[(split, name)]

    def features(self, split: str) -> np.ndarray:
        return self._once(split, "features", super().features)

    def labels(self, split: str) -> np.ndarray:
        return self._once(split, "labels", super().labels)
