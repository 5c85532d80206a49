"""Decode-once pixel cache vs decoding the original files with PIL, same images, same run.

Baseline: what extract does per image without a pixel cache — PIL decode of the file, RGB, resize
(shorter side to N, bicubic) and centre crop — one process. Pixel path: reading the same N×N uint8
squares back from the Zarr pixel cache `medfm prepare` wrote, in batches, one process (plus its one
prefetch thread). Both produce identical arrays (checked). The one-time `medfm prepare` cost is
printed too. A second line adds a backbone's batch preprocessing (resize to 256, crop 224,
normalise) to the pixel path, since extract does that work on the batch tensor instead, against
DINOv2's own PIL transform on the files (decode, resize 256, crop 224, to tensor, normalise).

    python benchmarks/bench_decode.py [--dataset busi] [--size 256] [--limit 0]
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medfm.backbones import Backbone, resolve_backbone
from medfm.config import PrepareConfig
from medfm.data import create_dataset
from medfm.paths import require_data_root
from medfm.pixels import PixelCache, batch_transform, run_prepare
from medfm.pixels.prepare import SquareRGB



def subset_manifest(dataset: str, limit: int, where: Path) -> str:
    """The first ``limit`` rows of a folder dataset's labels.csv, as a manifest of absolute paths."""
    root = require_data_root(None) / dataset
    rows = list(csv.DictReader(open(root / "labels.csv")))[:limit]
    out = where / "labels.csv"
    out.write_text("path,label\n" + "".join(f"{root / r['path']},{r['label']}\n" for r in rows))
    return str(out)


def best_of(repeat: int, fn):
    """Fastest of ``repeat`` timed calls (both paths alike: warm file cache, no one-off start-up costs)."""
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="busi")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--limit", type=int, default=0, help="first N images only (0: all)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3, help="timed passes per path; the fastest counts")
    ap.add_argument("--compress", default="none", choices=["none", "lz4", "zstd"])
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        name = subset_manifest(args.dataset, args.limit, Path(tmp)) if args.limit else args.dataset
        ds = create_dataset(name)
        t0 = time.perf_counter()
        prep = run_prepare(PrepareConfig(dataset=name, size=args.size, compress=args.compress, out=str(Path(tmp) / "pixels.zarr")))
        prepare_s = time.perf_counter() - t0
        cache = PixelCache(prep.cache)
        n = sum(len(s) for s in ds.splits.values())

        square = SquareRGB(args.size)
        pil_s, decoded = best_of(args.repeat, lambda: {
            s: np.stack([square(sp.images.load(i)).numpy() for i in range(len(sp))]) for s, sp in ds.splits.items()})

        def ranges(n):
            return [(lo, min(lo + args.batch_size, n)) for lo in range(0, n, args.batch_size)]

        read_s, read = best_of(args.repeat, lambda: {s: list(cache.batches(s, ranges(len(sp)))) for s, sp in ds.splits.items()})
        for s in decoded:
            assert all((b.numpy() == decoded[s][lo:hi]).all() for b, (lo, hi) in zip(read[s], ranges(len(decoded[s])))), \
                "pixel cache differs from PIL decode"

        spec = resolve_backbone("dinov2_vits14", "random", 224)  # its preprocessing only; no model is built
        pil_tf = Backbone(spec, None).transform
        full_s, _ = best_of(args.repeat, lambda: [pil_tf(sp.images.load(i)) for sp in ds.splits.values() for i in range(len(sp))][-1])
        tf = batch_transform(spec.data_config, 224)
        read_tf_s, _ = best_of(args.repeat, lambda: [tf(raw) for s, sp in ds.splits.items()
                                                    for raw in cache.batches(s, ranges(len(sp)))][-1])

    print(f"{n} images of {args.dataset} -> {args.size} px squares (codec {args.compress}); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs, best of {args.repeat}")
    print(f"medfm prepare (one-time, decode workers):   {prepare_s:7.2f} s   {n / prepare_s:8.1f} img/s")
    print(f"PIL decode + RGB + resize + crop:            {pil_s:7.2f} s   {n / pil_s:8.1f} img/s")
    print(f"pixel cache read (identical arrays):         {read_s:7.2f} s   {n / read_s:8.1f} img/s")
    print(f"DINOv2 input from files (PIL transform):     {full_s:7.2f} s   {n / full_s:8.1f} img/s")
    print(f"DINOv2 input from pixels (batch transform):  {read_tf_s:7.2f} s   {n / read_tf_s:8.1f} img/s")
    print(f"speed-up, pixel read vs PIL decode+resize: {pil_s / read_s:.1f}x;  "
          f"model-ready 224 px input, pixels vs files: {full_s / read_tf_s:.1f}x")


if __name__ == "__main__":
    main()
