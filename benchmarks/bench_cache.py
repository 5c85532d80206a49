"""Feature read rate: medfm's Zarr and HDF5 caches vs a raw ``.npy`` of the same array, same run,
and what verifying every chunk's crc32c costs (issue 12: verified reads within 1.3x of unverified).

The caches are written by medfm's own writer (``ZarrCacheWriter``, chunked like ``extract``) and
HDF5 export; the array is random float16 features (content barely matters: features compress
poorly). Each read is the whole ``features`` array into memory, best of 7 passes (the
paths take turns in each pass), warm file cache.
"unverified" is a plain zarr / h5py read of the array; "verified" is what probes read through
``FeatureCache`` (open with its metadata checks, read the done flags and digests, every chunk's
crc32c), in the stored dtype like the unverified read (``features()`` then converts to float32).

    python benchmarks/bench_cache.py [--rows 50000] [--dim 768]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import zarr

from medfm.cache import FeatureCache, SplitLayout, ZarrCacheWriter, export_h5
from medfm.cache.store import FORMAT

META = {"format": FORMAT, "fingerprint": "bench", "fingerprint_inputs": {}, "extract": {"tokens": False},
        "dataset": {"name": "bench", "task": "binary", "classes": ["a", "b"], "headline_metric": "auroc"},
        "backbone": {"name": "bench", "feature": "cls", "weights": {"origin": "random", "sha256": "-"},
                     "preprocessing": {"input_size": [3, 224, 224]}}}


def best_interleaved(repeat: int, fns: dict) -> dict[str, float]:
    """Best time of each path, the paths taking turns in every pass: a shared machine's load drifts,
    and turns expose verified and unverified reads to the same drift."""
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: min(ts) for name, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--chunk-rows", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    data = np.random.default_rng(0).standard_normal((args.rows, args.dim)).astype(np.float16)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lay = SplitLayout(args.rows, args.dim, None, (), args.chunk_rows)
        w = ZarrCacheWriter(tmp / "c.zarr", META, {"train": lay}, labels={"train": np.zeros(args.rows, np.int64)},
                            ids={"train": [str(i) for i in range(args.rows)]}, dtype="float16")
        for c in range(lay.n_chunks):
            w.write_chunk("train", c, data[c * args.chunk_rows:(c + 1) * args.chunk_rows], None)
        w.finish()
        shutil.copytree(tmp / "c.zarr", tmp / "copy.zarr")
        export_h5(tmp / "copy.zarr", tmp / "c.h5")
        np.save(tmp / "c.npy", data)

        def read_zarr():
            assert zarr.open_group(str(tmp / "c.zarr"), mode="r")["train/features"][:].shape == data.shape

        def read_h5():
            with h5py.File(tmp / "c.h5", "r") as f:
                assert f["train/features"][:].shape == data.shape

        def read_npy():
            assert np.load(tmp / "c.npy").shape == data.shape

        def verified(path):
            def read():
                cache = FeatureCache(path)
                assert cache.data("train", "features")[:].shape == data.shape
                cache.close()
            return read

        paths = (("npy", read_npy), ("zarr", read_zarr), ("zarr verified", verified(tmp / "c.zarr")), ("h5", read_h5),
                 ("h5 verified", verified(tmp / "c.h5")))
        times = best_interleaved(args.repeat, dict(paths))
    mb = data.nbytes / 1e6
    print(f"features [{args.rows}, {args.dim}] float16 = {mb:.0f} MB; Zarr chunks of {args.chunk_rows} rows; best of {args.repeat} interleaved passes")
    for name, s in times.items():
        print(f"{name:14s} {s:7.3f} s  {mb / s:8.0f} MB/s   {times['npy'] / s:5.2f}x the .npy rate")
    for fmt in ("zarr", "h5"):
        ratio = times[f"{fmt} verified"] / times[fmt]
        print(f"verified / unverified, {fmt}: {ratio:.2f}x  {'PASS' if ratio <= 1.3 else 'FAIL'} (issue 12: <= 1.3x)")


if __name__ == "__main__":
    main()
