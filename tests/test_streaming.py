"""Streaming memory: extract's peak host memory does not grow with the number of images.

One fresh subprocess extracts 2,000 then 20,000 images and reports its peak RSS (``ru_maxrss``)
after each, over synthetic MedMNIST-format ``.npz`` files (random 28 px images: content does not
matter for memory) with a real MobileNetV2 architecture, randomly initialised, at 32 px, float32
features + tokens (10 KB per image: keeping every output would add ~180 MB in the second run).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ROW_BYTES = (1280 + 1280) * 4  # float32 pooled feature + one 1280-d token (32 px -> 1x1 map)

CHILD = """
import json, resource, sys
from medfm.config import ExtractConfig
from medfm.extract import run_extract
for root in sys.argv[1:]:
    r = run_extract(ExtractConfig(backbone="mobilenetv2", weights="random", dataset="pneumoniamnist", data_root=root,
                                  img_size=32, batch_size=250, dtype="float32", tokens=True, num_workers=0,
                                  device="cpu", cache=root + "/features.zarr"))
    print(json.dumps({"extracted": r.extracted, "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _npz_root(tmp: Path, n: int) -> Path:
    root = tmp / f"data{n}"
    root.mkdir()
    rng = np.random.default_rng(n)
    splits = {"train": n, "val": 50, "test": 50}
    np.savez(root / "pneumoniamnist.npz", **{
        k: v for s, m in splits.items() for k, v in (
            (f"{s}_images", rng.integers(0, 256, (m, 28, 28), dtype=np.uint8)),
            (f"{s}_labels", (np.arange(m) % 2).astype(np.uint8)[:, None]))})
    return root


def test_peak_memory_does_not_grow_with_dataset_size(tmp_path):
    roots = [_npz_root(tmp_path, 2_000), _npz_root(tmp_path, 20_000)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "MEDFM_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD, *map(str, roots)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    small, big = (json.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    assert (small["extracted"], big["extracted"]) == (2_100, 20_100)
    print(f"peak RSS: {small['peak_kb'] >> 10} MB after 2,100 images, {big['peak_kb'] >> 10} MB after 20,100")
    peak_small, peak_big = small["peak_kb"] * 1024, big["peak_kb"] * 1024
    kept_if_leaking = (big["extracted"] - small["extracted"]) * ROW_BYTES
    # the bound, and a sharper one (a simulated leak, keeping every output, grew 263 MB and passed 1.5x):
    # growth under half of what keeping the outputs would cost (measured: +45 MB, mostly the bigger .npz)
    assert peak_big <= 1.5 * peak_small, (peak_small >> 20, peak_big >> 20)
    assert peak_big - peak_small < kept_if_leaking / 2, ((peak_big - peak_small) >> 20, kept_if_leaking >> 20)
