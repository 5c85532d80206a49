"""Cost of the content identity: hashing every image of a dataset, cold and with the stat sidecar.

Three passes over the files a dataset's manifest lists (the same ``hash_files`` that
``create_dataset`` calls), each with a fresh ``$MEDFM_CACHE`` unless it says otherwise:

- **cold**: no sidecar and the files' pages evicted from the OS page cache first
  (``posix_fadvise(DONTNEED)``, no privileges needed), so every byte comes from the disk;
- **warm**: no sidecar, files already in the page cache (the hashing CPU cost alone);
- **sidecar**: the sidecar of the previous pass is there, so only ``stat`` runs per file.

Then the rates are extrapolated to CheXpert's 224,316 files (``--extrapolate-files``) of about
11 GB for CheXpert-v1.0-small (``--extrapolate-gb``: its download size).

    python benchmarks/bench_hash.py [--dataset busi --dataset kermany_cxr_224] [--repeat 3]
"""

from __future__ import annotations

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

from medfm.data.content import THREADS, HashStats, hash_files, sidecar_path
from medfm.paths import require_data_root


def evict(paths: list[Path]) -> None:
    """Drop the files' clean pages from the page cache, so the next read goes to the disk."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed(fn) -> tuple[float, HashStats]:
    stats = HashStats()
    t0 = time.perf_counter()
    fn(stats)
    return time.perf_counter() - t0, stats


def bench(dataset: str, repeat: int) -> dict:
    root = require_data_root(None) / dataset
    rels = [r["path"] for r in csv.DictReader(open(root / "labels.csv"))]
    paths = [root / r for r in rels]
    total_bytes = sum(p.stat().st_size for p in paths)
    cold, warm, side = [], [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as cache:
            os.environ["MEDFM_CACHE"] = cache
            evict(paths)
            cold.append(timed(lambda s: hash_files(root, rels, rehash=True, stats=s)))
            sidecar_path(root).unlink()
            warm.append(timed(lambda s: hash_files(root, rels, rehash=True, stats=s)))
            side.append(timed(lambda s: hash_files(root, rels, stats=s)))
    assert all(s.hashed == len(rels) for _, s in cold + warm) and all(s.reused == len(rels) for _, s in side)
    best = lambda runs: min(t for t, _ in runs)  # noqa: E731
    return {"dataset": dataset, "files": len(rels), "mb": total_bytes / 1e6,
            "cold": best(cold), "warm": best(warm), "sidecar": best(side)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", action="append", help="registry dataset with a labels.csv [busi, kermany_cxr_224]")
    ap.add_argument("--repeat", type=int, default=3, help="passes; the fastest of each kind counts")
    ap.add_argument("--extrapolate-files", type=int, default=224_316)
    ap.add_argument("--extrapolate-gb", type=float, default=11.0)
    args = ap.parse_args()
    print(f"sha256, {THREADS} threads, {os.cpu_count()} CPUs; best of {args.repeat}")
    print(f"{'dataset':<16}{'files':>7}{'MB':>8}{'cold s':>9}{'MB/s':>8}{'warm s':>9}{'MB/s':>8}{'sidecar s':>11}{'µs/file':>9}")
    rows = [bench(d, args.repeat) for d in args.dataset or ["busi", "kermany_cxr_224"]]
    for r in rows:
        print(f"{r['dataset']:<16}{r['files']:>7}{r['mb']:>8.1f}{r['cold']:>9.3f}{r['mb'] / r['cold']:>8.0f}"
              f"{r['warm']:>9.3f}{r['mb'] / r['warm']:>8.0f}{r['sidecar']:>11.4f}{r['sidecar'] / r['files'] * 1e6:>9.1f}")
    cold_rate = sum(r["mb"] for r in rows) / sum(r["cold"] for r in rows)
    warm_rate = sum(r["mb"] for r in rows) / sum(r["warm"] for r in rows)
    stat_per_file = sum(r["sidecar"] for r in rows) / sum(r["files"] for r in rows)
    n, gb = args.extrapolate_files, args.extrapolate_gb
    print(f"extrapolated to {n:,} files / {gb:g} GB (CheXpert-v1.0-small): cold {gb * 1e3 / cold_rate:.0f} s "
          f"at this disk's rate, warm {gb * 1e3 / warm_rate:.0f} s, with the sidecar {n * stat_per_file:.1f} s")


if __name__ == "__main__":
    main()
