"""Feature read rate: medfm's Zarr and HDF5 caches vs a raw ``.npy`` of the same array, same run.

The caches are written by medfm's own writer (``ZarrCacheWriter``, chunked like ``extract``) and
HDF5 export; the array is random float16 features (content barely matters: features compress
poorly). Each read is the whole ``features`` array into memory, best of 3, warm file cache.

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

from medfm.cache.store import FORMAT, SplitLayout, ZarrCacheWriter, export_h5


def best_of(repeat: int, fn) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--chunk-rows", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    data = np.random.default_rng(0).standard_normal((args.rows, args.dim)).astype(np.float16)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lay = SplitLayout(args.rows, args.dim, None, (), args.chunk_rows)
        w = ZarrCacheWriter(tmp / "c.zarr", {"format": FORMAT}, {"train": lay}, labels={"train": np.zeros(args.rows, np.int64)},
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

        times = {name: best_of(args.repeat, fn) for name, fn in (("npy", read_npy), ("zarr", read_zarr), ("h5", read_h5))}
    mb = data.nbytes / 1e6
    print(f"features [{args.rows}, {args.dim}] float16 = {mb:.0f} MB; Zarr chunks of {args.chunk_rows} rows; best of {args.repeat}")
    for name, s in times.items():
        print(f"{name:5s} {s:7.3f} s  {mb / s:8.0f} MB/s   {times['npy'] / s:5.2f}x the .npy rate")


if __name__ == "__main__":
    main()
