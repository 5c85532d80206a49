"""Token streaming (issue 16, point 3): how fast a token cache is read, against raw ``.npy`` and the DeiT head.

The DeiT head streams patch tokens from the cache every epoch (``medfm.probe.tokens.TokenRows``: whole
chunks, in seeded random chunk order, each chunk checked against its crc32c digest as ``FeatureCache``
does). This script writes one float16 token array ``[N, T, D]`` (normal random values: like real
LayerNorm-ed tokens, float16 mantissas barely compress) in several layouts and reads each back the way
the head does:

- raw ``.npy`` (memory-mapped, chunk-sized slices copied out): the floor;
- Zarr v3 with medfm's current layout (chunks of ~32 MB = ``CHUNK_TARGET_BYTES``, zarr's default codec),
  with other chunk sizes, codecs (none, zstd, blosc-lz4 + byte shuffle) and Zarr v3 sharding;

each read cold (the files' pages dropped from the page cache first with ``posix_fadvise(DONTNEED)``,
so the disk is read) and warm (a second pass, from the page cache), plus the crc32c cost alone. Then the
DeiT head's own rate: forward + backward of a training step on this machine (CPU; a GPU row says "not
yet measured" unless run on one).

    python benchmarks/bench_tokens.py [--rows 2000] [--tokens 257] [--dim 384] [--depth 12] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from medfm.cache.digest import digest


def _drop(path: Path) -> None:
    """Evict a file's (or a folder's files') pages from the page cache: the next read goes to the disk."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)  # written pages are dropped only once clean
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _read_all(read_rows, n: int, chunk_rows: int, check: bool) -> float:
    """Seconds to read every chunk once, in a seeded random chunk order (as ``TokenRows`` does)."""
    order = np.random.default_rng(0).permutation(-(-n // chunk_rows))
    start = time.perf_counter()
    for c in order:
        block = read_rows(c * chunk_rows, min(n, (c + 1) * chunk_rows))
        if check:
            digest(block)
    return time.perf_counter() - start


def _zarr_layouts(chunk_rows: int) -> dict:
    from zarr.codecs import BloscCodec, ZstdCodec

    return {
        f"zarr, {chunk_rows}-row chunks, zarr's default codec (medfm today)": dict(chunks=chunk_rows),
        f"zarr, {chunk_rows}-row chunks, no compression": dict(chunks=chunk_rows, compressors=None),
        f"zarr, {chunk_rows}-row chunks, zstd level 1": dict(chunks=chunk_rows, compressors=ZstdCodec(level=1)),
        f"zarr, {chunk_rows}-row chunks, blosc lz4 + byte shuffle": dict(
            chunks=chunk_rows, compressors=BloscCodec(cname="lz4", clevel=5, shuffle="shuffle", typesize=2)),
        f"zarr, {max(1, chunk_rows // 8)}-row chunks": dict(chunks=max(1, chunk_rows // 8)),
        f"zarr, {max(1, chunk_rows // 8)}-row chunks in {chunk_rows}-row shards, no compression": dict(
            chunks=max(1, chunk_rows // 8), shards=chunk_rows, compressors=None),
    }


def head_rate(tokens: int, dim: int, depth: int, device: str, batch: int = 16, steps: int = 3) -> float:
    """Rows per second of one DeiT-head training step (forward, backward, AdamW) on ``device``."""
    from medfm.heads.deit import DeiTHead

    model = DeiTHead(dim, 2, depth, tokens).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, tokens, dim, device=device)
    y = torch.randint(0, 2, (batch,), device=device)

    def step():
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    import zarr

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--tokens", type=int, default=257)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--depth", type=int, default=12, help="DeiT head depth (the studies': 12)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dir", default=None, help="where to write the arrays (default: a temporary folder)")
    args = ap.parse_args()
    n, t, d = args.rows, args.tokens, args.dim
    row_bytes = t * d * 2
    chunk_rows = max(8, (32 << 20) // row_bytes // 8 * 8)  # medfm's CHUNK_TARGET_BYTES (a multiple of 8 rows)
    tokens = np.random.default_rng(0).normal(size=(n, t, d)).astype(np.float16)
    print(f"token array {n:,} x {t} x {d} float16 = {tokens.nbytes / 1e9:.2f} GB; load average {os.getloadavg()[0]:.2f}")
    print("| layout | on disk | cold read | warm read | warm read + crc32c (as medfm reads) |")
    print("|---|---|---|---|---|")
    root = Path(tempfile.mkdtemp(dir=args.dir, prefix="bench-tokens-"))
    try:
        rates = {}

        def report(name, path, read_rows, rows_per_read):
            _drop(path)
            cold = _read_all(read_rows, n, rows_per_read, check=False)
            warm = _read_all(read_rows, n, rows_per_read, check=False)
            checked = _read_all(read_rows, n, rows_per_read, check=True)
            mb = tokens.nbytes / 1e6
            rates[name] = mb / cold
            print(f"| {name} | {_size(path) / 1e6:,.0f} MB | {mb / cold:,.0f} MB/s ({n / cold:,.0f} rows/s) "
                  f"| {mb / warm:,.0f} MB/s | {mb / checked:,.0f} MB/s ({n / checked:,.0f} rows/s) |", flush=True)

        npy = root / "tokens.npy"
        np.save(npy, tokens)
        mm = np.load(npy, mmap_mode="r")
        report(f"raw .npy, {chunk_rows}-row slices", npy, lambda lo, hi: np.array(mm[lo:hi]), chunk_rows)
        del mm
        for i, (name, kw) in enumerate(_zarr_layouts(chunk_rows).items()):
            path = root / f"z{i}.zarr"
            kw = dict(kw)
            read_rows_per = kw.get("shards") or kw["chunks"]
            chunks, shards = (kw.pop("chunks"), t, d), kw.pop("shards", None)
            arr = zarr.create_array(path, shape=tokens.shape, dtype="float16", chunks=chunks,
                                    shards=(shards, t, d) if shards else None, **kw)
            arr[:] = tokens
            arr = zarr.open_array(path, mode="r")
            report(name, path, lambda lo, hi, a=arr: np.asarray(a[lo:hi]), max(read_rows_per, chunk_rows))
            shutil.rmtree(path)
        crc = time.perf_counter()
        for lo in range(0, n, chunk_rows):
            digest(tokens[lo:lo + chunk_rows])
        print(f"\ncrc32c alone: {tokens.nbytes / 1e6 / (time.perf_counter() - crc):,.0f} MB/s")
        rate = head_rate(t, d, args.depth, args.device, batch=16 if args.device.startswith("cuda") else 4,
                         steps=10 if args.device.startswith("cuda") else 2)
        print(f"DeiT head (depth {args.depth}) training step on {args.device}: {rate:,.1f} rows/s = "
              f"{rate * row_bytes / 1e6:,.1f} MB/s of tokens; load average {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
