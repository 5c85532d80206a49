"""``medfm extract``: run a frozen backbone once over a dataset into a fingerprinted cache.

The run is resumable: rows are computed and written a chunk at a time (a chunk is a whole number
of batches, so a resumed run sees exactly the batches an uninterrupted one would), and a chunk
flagged done is never recomputed. A finished cache is reused without building the model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medfm import __version__
from medfm.backbones import BackboneSpec, check_grey_mode, resolve_backbone
from medfm.backbones.norm import stats_workers, with_norm
from medfm.backbones.names import folder_name
from medfm.cache.fingerprint import fingerprint
from medfm.cache.kinds import FEATURES
from medfm.cache.lifecycle import Finished, Writing, open_store
from medfm.cache.store import (FORMAT, FORMAT_VERSION, BackgroundWriter, SplitLayout, ZarrCacheWriter, disk_full_error,
                               is_disk_full, is_h5)
from medfm.config import ExtractConfig, dataset_options
from medfm.data import Dataset, create_dataset
from medfm.data.splits import split_file_path, write_split_file
from medfm.distributed import Dist, setup
from medfm.errors import MedfmError
from medfm.extract.loader import default_workers, make_loader
from medfm.extract.shard import assign_chunks
from medfm.extract.transfer import LaggedCopies
from medfm.extract.tuning import autocast, choose_batch_size, compile_backbone, lay_out, lay_out_batch
from medfm.paths import cache_root
from medfm.pixels.read import PixelCache, batch_transform, find_pixel_cache, pixel_choice, scale_size
from medfm.ui import console, progress

CHUNK_TARGET_BYTES = 32 << 20  # a chunk of rows holds at most about this much (features + tokens) ...
CHUNK_MAX_ROWS = 1024  # ... and at most this many rows, so a kill loses little work
FP16_MAX = 65504.0


@dataclass
class ExtractResult:
    cache: Path
    fingerprint: str
    extracted: int  # images run through the backbone in this call (0 = reused)
    reused: bool
    seconds: float
    world_size: int = 1  # torchrun processes that shared the work (extracted counts all of them)
    rank: int = 0  # this process's rank: only rank 0 reports
    loop_seconds: float = 0.0  # the compute-and-write loop alone (no dataset scan, model build or compile warm-up)

    def to_dict(self) -> dict:
        return {"cache": str(self.cache), "fingerprint": self.fingerprint, "extracted": self.extracted,
                "reused": self.reused, "seconds": round(self.seconds, 2), "world_size": self.world_size}


def fingerprint_inputs(cfg: ExtractConfig, dataset: Dataset, spec: BackboneSpec, pixels: PixelCache | None = None) -> dict:
    inputs = {
        "format_version": FORMAT_VERSION,
        "medfm_version": __version__,
        "dataset": dataset.identity,
        "backbone": spec.identity(),
        "tokens": cfg.tokens,
        "dtype": cfg.dtype,
    } | ({"tokens_from": spec.tokens_source} if cfg.tokens and spec.tokens_source != "output" else {})
    if pixels is not None:  # absent when decoding files, so those caches keep their fingerprint
        inputs["pixels"] = {"fingerprint": pixels.fingerprint, "size": pixels.size, "transform": "batch (torch, antialiased)"}
    return inputs


def default_cache_path(dataset: Dataset, spec: BackboneSpec, digest: str, fmt: str, tokens: bool) -> Path:
    suffix = ".h5" if fmt == "h5" else ".zarr"
    kind = (spec.feature.replace("+", "_") + (f"-last{spec.layers}" if spec.layers > 1 else "")
            + (f"-block{spec.drop_cutoff}" if spec.drop_cutoff is not None else "")
            + (("-attnpool" if spec.tokens_from == "attn_pool" else "") + "-tokens" if tokens else ""))
    return cache_root() / dataset.name / f"{folder_name(spec.entry.name)}-{kind}-{spec.img_size}px-{digest[:12]}{suffix}"


def run_extract(cfg: ExtractConfig) -> ExtractResult:
    """Extract (or reuse) the cache ``cfg`` asks for; under torchrun every rank calls this.

    Under torchrun the chunks still to do are dealt round-robin to the ranks; each rank writes only
    its own chunks (whole Zarr chunk files, so no locks), rank 0 alone creates the store, writes
    the split file and marks the cache complete once every rank is done. A chunk is computed from
    exactly the batches a single process would use, so the cache is the same either way.
    """
    start = time.perf_counter()
    d, device = setup(cfg.device)
    try:
        return _run_extract(cfg, d, device, start)
    finally:
        d.close()


def _run_extract(cfg: ExtractConfig, d: Dist, device: torch.device, start: float) -> ExtractResult:
    say = console.print if d.is_main else (lambda *args, **kwargs: None)
    dataset = create_dataset(cfg.dataset, cfg.data_root, skip_bad=cfg.skip_bad, **dataset_options(cfg))
    spec = resolve_backbone(cfg.backbone, cfg.weights, cfg.img_size, cfg.feature, cfg.layers, cfg.grey, cfg.backbones_file,
                            cfg.drop_cutoff, cfg.tokens_from if cfg.tokens else "patch",
                            resize=cfg.resize, resize_size=cfg.resize_size)  # tokens_from: only stored tokens
    if cfg.compile and cfg.drop_cutoff is not None:
        raise MedfmError("--compile cannot trace --drop-cutoff's early stop", "drop --compile (or --drop-cutoff)")
    check_grey_mode(cfg.grey, dataset)
    # --norm dataset: the train split's mean/std (computed once, kept beside the caches); protocol: the declared ones
    spec = with_norm(spec, dataset, cfg.norm, cfg.dataset, stats_workers(cfg.num_workers), say=say)
    use = pixel_choice(cfg.pixels, spec, say)  # auto: only where it is exact in geometry
    pixels = find_pixel_cache(dataset, scale_size(spec.data_config, spec.img_size), use)
    if pixels is not None:
        say(f"reading pre-decoded pixels from {pixels.path} ({pixels.size} px)")
    inputs = fingerprint_inputs(cfg, dataset, spec, pixels)
    digest = fingerprint(inputs)
    path = Path(cfg.cache) if cfg.cache else default_cache_path(dataset, spec, digest, cfg.format, cfg.tokens)
    if cfg.cache and is_h5(path) != (cfg.format == "h5"):
        raise MedfmError(f"--cache {path} does not match --format {cfg.format}", "use a .zarr path for zarr, .h5 for h5")

    store = open_store(path, FEATURES, digest, inputs, resume=cfg.resume, wait=cfg.wait, dist=d, say=say)
    if d.is_main and (isinstance(store, Writing) or not split_file_path(path).exists()):
        try:
            write_split_file(dataset, split_file_path(path))  # its sha256 is in the fingerprint: same path, same bytes
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error(split_file_path(path)) from None
            raise
    if isinstance(store, Finished):
        done = "finished the interrupted HDF5 export of" if store.exported else "reusing finished cache"
        say(f"[green]{done}[/] {path} (fingerprint {digest[:12]}, every chunk verified); no backbone work done")
        return ExtractResult(path, digest, 0, True, time.perf_counter() - start, d.world, d.rank)
    with store:  # the writer lock (rank 0's) is released however this ends
        return _write(cfg, d, device, start, say, dataset, spec, pixels, inputs, digest, path, store)


def _write(cfg: ExtractConfig, d: Dist, device: torch.device, start: float, say, dataset: Dataset, spec: BackboneSpec,
           pixels: PixelCache | None, inputs: dict, digest: str, path: Path, store: Writing) -> ExtractResult:
    work_meta = store.resume_meta
    say(f"building [bold]{spec.entry.name}[/] ({spec.entry.model_id}, weights: {spec.weights.origin}) on {device}")
    backbone = spec.build(device)
    lay_out(backbone)
    dim, token_shape = _output_shapes(backbone, spec, device, cfg.tokens)
    label_shape = () if dataset.task != "multilabel" else (dataset.num_classes,)
    row_bytes = (dim + (token_shape[0] * token_shape[1] if token_shape else 0)) * (2 if cfg.dtype == "float16" else 4)
    fixed_rows = work_meta["extract"]["chunk_rows"] if work_meta is not None else cfg.chunk_rows
    batch_size = choose_batch_size(cfg.batch_size, backbone, device, cfg.tokens, row_bytes, CHUNK_TARGET_BYTES, fixed_rows,
                                   work_meta["extract"]["batch_size"] if work_meta is not None else None)
    batch_size = min(d.gather(batch_size))  # torchrun ranks agree (every rank's choice fits, so the smallest fits all)
    chunk_rows = cfg.chunk_rows or batch_size * max(
        1, min(CHUNK_MAX_ROWS // batch_size, CHUNK_TARGET_BYTES // (row_bytes * batch_size))
    )
    if chunk_rows % batch_size:
        raise MedfmError(f"chunk_rows {chunk_rows} is not a multiple of --batch-size {batch_size}",
                         "pick chunk_rows = k * batch_size (batches must not straddle chunks)")
    if work_meta is not None:  # resuming: the chunking was fixed when the store was created
        chunk_rows = work_meta["extract"]["chunk_rows"]
        if chunk_rows % batch_size:
            raise MedfmError(
                f"--batch-size {batch_size} does not divide this cache's chunk of {chunk_rows} rows",
                f"resume with the original --batch-size {work_meta['extract']['batch_size']}",
            )
    if cfg.compile:
        compile_backbone(backbone, device, batch_size, [len(sp) for sp in dataset.splits.values()], cfg.tokens)
    layouts = {s: SplitLayout(len(sp), dim, token_shape, label_shape, chunk_rows) for s, sp in dataset.splits.items()}
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "medfm_version": __version__,
        "fingerprint": digest,
        "fingerprint_inputs": inputs,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "dataset": {"name": dataset.name, "task": dataset.task, "classes": dataset.classes,
                    "headline_metric": dataset.headline_metric, "source": dataset.source, "notes": dataset.notes,
                    "skipped": dataset.skipped, "split_file": str(split_file_path(path)),
                    "counts": dataset.summary()},
        "backbone": {**spec.identity(), "family": spec.entry.family, "feature_dim": dim,
                     "token_shape": list(token_shape) if token_shape else None, "weights_path": str(spec.weights.path)},
        "pixels": {"path": str(pixels.path), "fingerprint": pixels.fingerprint, "size": pixels.size} if pixels else None,
        "extract": {"tokens": cfg.tokens, "tokens_from": spec.tokens_source if cfg.tokens else None, "dtype": cfg.dtype, "batch_size": batch_size, "chunk_rows": chunk_rows,
                    "compile": cfg.compile, "device": str(device), "world_size": d.world, "config": cfg.to_dict()},
    }
    writer = store.writer(lambda: ZarrCacheWriter(  # rank 0 creates the store, then the others open it
        store.work, meta, layouts,
        labels={s: sp.labels for s, sp in dataset.splits.items()},
        ids={s: sp.ids for s, sp in dataset.splits.items()},
        dtype=cfg.dtype,
    ))
    pending = store.pending(writer)  # rank 0 verifies what is done and reads what is left, before any rank writes
    mine = assign_chunks(pending, d.rank, d.world)
    workers = cfg.num_workers if cfg.num_workers is not None else default_workers(device)
    cfg = cfg.model_copy(update={"batch_size": batch_size})  # "auto" resolved; the stored config keeps the request
    extracted, loop_start = 0, time.perf_counter()
    with progress() as bar, BackgroundWriter(writer) as background:  # disk writes overlap the next chunk's compute
        for split_name, split in dataset.splits.items():
            extracted += _extract_split(background, split_name, split, mine[split_name], backbone, layouts[split_name], cfg,
                                        device, workers, bar, pixels, show=d.is_main)
    extracted = sum(d.gather(extracted))
    loop_seconds = time.perf_counter() - loop_start
    store.finish(writer)  # once every rank's chunks are on disk: complete, then HDF5 export
    seconds = time.perf_counter() - start
    ranks = f" by {d.world} processes" if d.active else ""
    say(f"[green]wrote[/] {path} ({extracted} images{ranks} in {seconds:.1f} s)")
    return ExtractResult(path, digest, extracted, False, seconds, d.world, d.rank, loop_seconds)


def _output_shapes(backbone, spec, device, tokens: bool):
    size = spec.img_size
    with torch.inference_mode():
        pooled, toks = backbone.embed(torch.zeros(1, 3, size, size, device=device), with_tokens=tokens)
    return int(pooled.shape[1]), (tuple(int(s) for s in toks.shape[1:]) if toks is not None else None)


def _pixel_batches(pixels: PixelCache, split_name: str, pending: list[int], lay: SplitLayout, batch_size: int,
                   transform, device):
    """Batches of pre-decoded pixels, preprocessed on ``device``, in the loader's (images, idx, errors) form."""
    ranges = [(lo, min(lo + batch_size, hi)) for c in pending
              for hi in [min((c + 1) * lay.chunk_rows, lay.n)] for lo in range(c * lay.chunk_rows, hi, batch_size)]
    for (lo, hi), raw in zip(ranges, pixels.batches(split_name, ranges)):
        if device.type == "cuda":
            raw = raw.pin_memory()
        yield transform(raw.to(device, non_blocking=True)), list(range(lo, hi)), []


def _extract_split(background, split_name, split, pending: list[int], backbone, lay: SplitLayout, cfg, device, workers, bar,
                   pixels=None, show: bool = True) -> int:
    """Compute and write the chunks ``pending`` (ascending) of one split; returns the images run."""
    todo = sum(min(lay.chunk_rows, lay.n - c * lay.chunk_rows) for c in pending)
    task = bar.add_task(f"{split_name:5s}", total=lay.n, completed=lay.n - todo, rate="", visible=show)
    if not pending:
        return 0
    indices = [i for c in pending for i in range(c * lay.chunk_rows, min((c + 1) * lay.chunk_rows, lay.n))]
    if pixels is not None:
        loader = _pixel_batches(pixels, split_name, pending, lay, cfg.batch_size,
                                batch_transform(backbone.spec.data_config, backbone.spec.img_size), device)
    else:
        loader = make_loader(split, backbone.transform, indices, cfg.batch_size, workers, device)
    np_dtype = np.float16 if cfg.dtype == "float16" else np.float32
    amp = autocast(device)
    feats, toks, rows, chunk_iter = [], [], 0, iter(pending)
    chunk = next(chunk_iter)
    started, done = time.perf_counter(), 0

    def take(arrays, idx):  # one batch's outputs, now on the host, in loader order
        nonlocal rows, done, chunk, feats, toks
        pooled, patch = arrays
        feats.append(_checked(pooled, np_dtype, split_name, idx[0]))
        if patch is not None:
            toks.append(_checked(patch, np_dtype, split_name, idx[0]))
        rows += len(idx)
        done += len(idx)
        bar.update(task, advance=len(idx), rate=f"{done / (time.perf_counter() - started):.1f} img/s")
        if rows == min(lay.chunk_rows, lay.n - chunk * lay.chunk_rows):
            background.write_chunk(split_name, chunk, np.concatenate(feats), np.concatenate(toks) if toks else None)
            feats, toks, rows = [], [], 0
            chunk = next(chunk_iter, None)

    copies = LaggedCopies(device)  # the host reads batch k while the GPU already runs batch k + 1
    with torch.inference_mode(), amp:
        for images, idx, errors in loader:
            if errors:
                for arrays, batch_idx in copies.drain():  # batches before the bad file still complete their chunks
                    take(arrays, batch_idx)
                more = f" (and {len(errors) - 1} more in this batch)" if len(errors) > 1 else ""
                raise MedfmError(errors[0] + more, "fix or remove that file, then rerun: finished chunks are kept")
            x = lay_out_batch(backbone, images.to(device, non_blocking=True))
            for arrays, batch_idx in copies.push(backbone.embed(x, with_tokens=cfg.tokens), idx):
                take(arrays, batch_idx)
        for arrays, batch_idx in copies.drain():
            take(arrays, batch_idx)
    return done


def _checked(arr: np.ndarray, dtype, split: str, first_row: int) -> np.ndarray:
    """Refuse to store NaN/inf or float16 overflow: a cache must never hold them silently."""
    if not np.isfinite(arr).all():
        raise MedfmError(f"the backbone produced NaN/inf features ({split} rows from {first_row})",
                         "check the weights file; try --device cpu to rule out a GPU numerics problem")
    if dtype == np.float16 and np.abs(arr).max() > FP16_MAX:
        raise MedfmError(f"features exceed the float16 range ({split} rows from {first_row})", "rerun with --dtype float32")
    return arr.astype(dtype)


def repair_extract(path: Path, meta: dict) -> None:
    """Rerun the extraction that made the feature cache ``path`` (its stored config), which recomputes exactly
    the chunks that fail verification (``medfm cache verify --repair``)."""
    pixels = (meta.get("pixels") or {}).get("path") or "none"
    stored = meta.get("extract", {}).get("config", {})
    run_extract(ExtractConfig(**{**stored, "cache": str(path), "resume": True, "wait": False, "pixels": pixels}))
