"""``medfm prepare``: decode, convert to RGB and resize every image of a dataset once.

Resize policy (``RESIZE_POLICY``): the shorter side is resized to N with PIL bicubic (antialiased),
then the centre N×N square is cropped. Backbones centre-crop too (timm ``crop_mode=center``,
open_clip ``resize_mode=shortest``), so the region a backbone sees from the square is the region
it would see from the original file; only the resampling happens twice (see README "Pixel cache").

Decoding runs in DataLoader worker processes (``--workers``) through the same readers as extract
(``medfm.data.images.READERS``: PNG/JPEG/TIFF, DICOM with its window, NIfTI). Rows are written a
chunk at a time with done flags, exactly like the feature cache, so a killed prepare resumes.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medfm import __version__
from medfm.backbones import GREY_TO_RGB, to_rgb
from medfm.cache.fingerprint import fingerprint
from medfm.cache.kinds import PIXELS
from medfm.cache.lifecycle import Finished, Writing, open_store
from medfm.cache.store import SplitLayout, ZarrCacheWriter
from medfm.config import PrepareConfig, dataset_options
from medfm.data import Dataset, create_dataset
from medfm.errors import MedfmError
from medfm.extract.loader import make_loader
from medfm.paths import cache_root
from medfm.pixels.read import RESIZE_POLICY
from medfm.ui import console, progress

PIXEL_FORMAT = PIXELS.fmt
PIXEL_FORMAT_VERSION = PIXELS.version


@dataclass
class PrepareResult:
    cache: Path
    fingerprint: str
    prepared: int
    reused: bool
    seconds: float

    def to_dict(self) -> dict:
        return {"cache": str(self.cache), "fingerprint": self.fingerprint, "prepared": self.prepared,
                "reused": self.reused, "seconds": round(self.seconds, 2)}


class SquareRGB:
    """PIL image -> uint8 tensor [N, N, 3] by ``RESIZE_POLICY`` (picklable, for worker processes)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, img) -> torch.Tensor:
        from PIL import Image

        img = to_rgb(img)
        w, h = img.size
        scale = self.size / min(w, h)
        nw, nh = max(self.size, round(w * scale)), max(self.size, round(h * scale))
        img = img.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - self.size) // 2, (nh - self.size) // 2
        img = img.crop((left, top, left + self.size, top + self.size))
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())


def pixel_inputs(dataset: Dataset, size: int) -> dict:
    return {"format": PIXEL_FORMAT, "format_version": PIXEL_FORMAT_VERSION, "dataset": dataset.identity,
            "size": size, "resize": RESIZE_POLICY, "channels": GREY_TO_RGB}


def default_pixel_path(dataset: Dataset, size: int, digest: str) -> Path:
    return cache_root() / dataset.name / f"pixels-{size}px-{digest[:12]}.zarr"


def _blosc_lz4():
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="lz4", clevel=1, shuffle="noshuffle")


def _zstd():
    from zarr.codecs import ZstdCodec

    return ZstdCodec(level=3)


# Reading raw chunks is a memory copy; on BUSI lz4 reads ~2.5x slower at ~2/3 the disk, zstd ~6x slower
# at ~1/3 the disk (measured while building bench_decode.py). Raw is the default: decode is what we remove.
COMPRESSORS = {"none": lambda: None, "lz4": _blosc_lz4, "zstd": _zstd}


class PixelWriter(ZarrCacheWriter):
    """The feature cache's resumable writer with an ``images [n, N, N, 3] uint8`` array instead of features."""

    KIND = PIXELS

    def __init__(self, *args, compress: str = "none", **kw):
        self.compress = compress  # before the base class creates the arrays
        super().__init__(*args, **kw)

    def _create_data(self, g, lay: SplitLayout, dtype):
        n = lay.feature_dim  # the square's side (SplitLayout's "feature_dim" slot)
        g.create_array("images", shape=(lay.n, n, n, 3), chunks=(lay.chunk_rows, n, n, 3), dtype="uint8",
                       fill_value=0, dimension_names=("sample", "y", "x", "channel"),
                       compressors=COMPRESSORS[self.compress]())

    def _blocks(self, images: np.ndarray, tokens=None) -> dict[str, np.ndarray]:
        return {"images": images}


def pixel_chunk_rows(size: int) -> int:
    """Rows per chunk: a power of two of at most ~8 MB (32 rows at 224/256 px, 8 at 518), so extract's
    power-of-two batches cover whole chunks and no chunk is read twice."""
    fit = max(1, min(256, (8 << 20) // (size * size * 3)))
    return 1 << (fit.bit_length() - 1)


def run_prepare(cfg: PrepareConfig) -> PrepareResult:
    start = time.perf_counter()
    dataset = create_dataset(cfg.dataset, cfg.data_root, skip_bad=cfg.skip_bad, **dataset_options(cfg))
    inputs = pixel_inputs(dataset, cfg.size)
    digest = fingerprint(inputs)
    path = Path(cfg.out) if cfg.out else default_pixel_path(dataset, cfg.size, digest)
    store = open_store(path, PIXELS, digest, inputs, resume=cfg.resume, wait=cfg.wait, say=console.print)
    if isinstance(store, Finished):
        console.print(f"[green]reusing finished pixel cache[/] {path} (every chunk verified); nothing decoded")
        return PrepareResult(path, digest, 0, True, time.perf_counter() - start)
    with store:  # the writer lock is released however this ends
        return _write(cfg, dataset, inputs, digest, path, store, start)


def _write(cfg: PrepareConfig, dataset: Dataset, inputs: dict, digest: str, path: Path, store: Writing,
           start: float) -> PrepareResult:
    meta_now = store.resume_meta
    chunk_rows = meta_now["chunk_rows"] if meta_now else (cfg.chunk_rows or pixel_chunk_rows(cfg.size))
    label_shape = () if dataset.task != "multilabel" else (dataset.num_classes,)
    layouts = {s: SplitLayout(len(sp), cfg.size, None, label_shape, chunk_rows) for s, sp in dataset.splits.items()}
    meta = {"format": PIXEL_FORMAT, "format_version": PIXEL_FORMAT_VERSION, "medfm_version": __version__,
            "fingerprint": digest, "fingerprint_inputs": inputs, "size": cfg.size, "chunk_rows": chunk_rows,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "dataset": {"name": dataset.name, "task": dataset.task, "classes": dataset.classes,
                        "source": dataset.source, "counts": dataset.summary()},
            "compress": meta_now.get("compress", cfg.compress) if meta_now else cfg.compress, "config": cfg.to_dict()}
    writer = store.writer(lambda: PixelWriter(store.work, meta, layouts, labels={s: sp.labels for s, sp in dataset.splits.items()},
                                              ids={s: sp.ids for s, sp in dataset.splits.items()}, dtype="uint8",
                                              compress=meta["compress"]))
    todo = store.pending(writer)  # chunks flagged done are verified first; a bad one is redone
    workers = cfg.workers if cfg.workers is not None else max(1, min(8, (os.cpu_count() or 1)))
    square = SquareRGB(cfg.size)
    prepared = 0
    with progress() as bar:
        for name, split in dataset.splits.items():
            lay = layouts[name]
            pending = todo[name]
            task = bar.add_task(f"{name:5s}", total=lay.n, completed=lay.n - sum(
                min(lay.chunk_rows, lay.n - c * lay.chunk_rows) for c in pending), rate="")
            if not pending:
                continue
            indices = [i for c in pending for i in range(c * lay.chunk_rows, min((c + 1) * lay.chunk_rows, lay.n))]
            loader = make_loader(split, square, indices, chunk_rows, workers, torch.device("cpu"))
            for chunk, (images, idx, errors) in zip(pending, loader):
                if errors:
                    more = f" (and {len(errors) - 1} more in this chunk)" if len(errors) > 1 else ""
                    raise MedfmError(errors[0] + more, "fix or remove that file, then rerun: finished chunks are kept")
                writer.write_chunk(name, chunk, images.numpy())
                prepared += len(idx)
                bar.update(task, advance=len(idx))
    store.finish(writer)
    seconds = time.perf_counter() - start
    console.print(f"[green]wrote[/] {path} ({prepared} images at {cfg.size} px in {seconds:.1f} s)")
    return PrepareResult(path, digest, prepared, False, seconds)


def repair_prepare(path: Path, meta: dict) -> None:
    """Rerun the prepare that made the pixel cache ``path`` (its stored config): recomputes exactly its bad chunks."""
    run_prepare(PrepareConfig(**{**meta.get("config", {}), "out": str(path), "resume": True, "wait": False}))
