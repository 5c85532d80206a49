"""Extract-time tuning: the batch size (``--batch-size auto``) and optional ``torch.compile``.

Both are decided once, after the backbone is built and before any row is computed, and neither
changes what is computed: each image's features do not depend on the batch it is in, and the
compiled network computes what the eager one does, both up to float rounding (kernels differ with
shapes and fusion). So neither is in the cache fingerprint; both are recorded in the cache's
``extract`` metadata (the batch size actually used, and ``compile``).

Batch size "auto" must respect the cache's chunking: a chunk is a whole number of batches (so a
resumed run sees the batches an uninterrupted one would). When the chunk size is already fixed
(resuming a store, or ``--chunk-rows`` given) only batch sizes dividing it are candidates.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from medfm.errors import MedfmError

AUTO_BATCH_CAP = 1024  # the largest batch "auto" tries (also the default chunk's row limit, CHUNK_MAX_ROWS)
CPU_AUTO_BATCH = 64  # see cpu_batch_size
MEMORY_HEADROOM = 0.8  # a trial batch may peak at this share of the memory free to us (the rest: loader, fragmentation)
_OOM_MESSAGES = ("out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDNN_STATUS_NOT_ENOUGH_WORKSPACE")


def autocast(device: torch.device):
    """The precision extract runs the backbone in: bf16 autocast on CUDA, full fp32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def channels_last(backbone) -> bool:
    """CNNs run channels-last (NHWC) on every device, not only CUDA: cuDNN's and oneDNN's fast
    convolution kernels (depthwise ones above all) want that layout. Transformers are unaffected."""
    return backbone.spec.entry.arch == "cnn"


def lay_out(backbone) -> None:
    """Put a freshly built backbone in the memory layout extract runs it in."""
    if channels_last(backbone):
        backbone.net.to(memory_format=torch.channels_last)


def lay_out_batch(backbone, x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last(backbone) else x


def model_input(backbone, device: torch.device, batch: int) -> torch.Tensor:
    """A batch shaped, placed and laid out as extract feeds the backbone."""
    size = backbone.spec.img_size
    return lay_out_batch(backbone, torch.zeros(batch, 3, size, size, device=device))


def batch_candidates(cap: int, chunk_rows: int | None = None, resumed: int | None = None) -> list[int]:
    """Batch sizes "auto" may pick, best first.

    Powers of two up to ``cap``; with the chunk size fixed, only those dividing it. Resuming a store,
    the batch size it was started with comes first (the run then sees exactly its batches).
    """
    powers = [1 << k for k in range(max(cap, 1).bit_length() - 1, -1, -1)]
    if chunk_rows is not None:
        powers = [p for p in powers if chunk_rows % p == 0]
    if resumed is not None and (chunk_rows is None or chunk_rows % resumed == 0):
        return [resumed] + [p for p in powers if p < resumed]
    return powers


def auto_cap(row_bytes: int, chunk_target_bytes: int) -> int:
    """The largest power of two <= AUTO_BATCH_CAP whose outputs fit one chunk's byte target (at least 1)."""
    rows = max(1, min(AUTO_BATCH_CAP, chunk_target_bytes // max(row_bytes, 1)))
    return 1 << (rows.bit_length() - 1)


def choose_batch_size(requested: int | str, backbone, device: torch.device, tokens: bool, row_bytes: int,
                      chunk_target_bytes: int, chunk_rows: int | None = None, resumed: int | None = None) -> int:
    """``requested`` if it is a number; for "auto", a batch size that fits the device and the chunking.

    ``chunk_rows``: the chunk size when it is already fixed (the store being resumed, or --chunk-rows);
    ``resumed``: the batch size the store being resumed was started with.
    """
    if requested != "auto":
        return int(requested)
    from medfm.ui import console

    candidates = batch_candidates(auto_cap(row_bytes, chunk_target_bytes), chunk_rows, resumed)
    if device.type != "cuda":
        batch = cpu_batch_size(candidates, resumed)
        how = "the resumed cache's own" if resumed == batch else f"fixed on CPU, <= {CPU_AUTO_BATCH}"
    else:
        batch = largest_fitting(candidates, backbone, device, tokens)
        how = "the resumed cache's own, fits" if resumed == batch else f"the largest batch up to {candidates[0]} that fits {device}"
    console.print(f"--batch-size auto -> {batch} ({how})")
    return batch


def cpu_batch_size(candidates: list[int], resumed: int | None) -> int:
    """On CPU, "auto" is a fixed size, not a search.

    There is no memory to probe: running out of host RAM does not raise a catchable error, it gets
    the process killed (or swaps the shared machine). Nor is there speed to gain: the model already
    uses every core at small batches (DINOv2-S at 112 px on 2 cores: the same images/s at 8 and at
    128 per batch), so a bigger batch only holds more activations and output rows in RAM. So: the default 64, or the
    resumed store's own batch size, or the largest candidate below 64 that the chunking allows.
    """
    if resumed is not None and candidates and candidates[0] == resumed:
        return resumed
    return next(c for c in candidates if c <= CPU_AUTO_BATCH)


def largest_fitting(candidates: list[int], backbone, device: torch.device, tokens: bool) -> int:
    """The first candidate whose forward pass (tokens if stored, same autocast) fits in GPU memory.

    Each trial runs the real backbone on a zero batch; a candidate fails if CUDA runs out of
    memory or if the pass peaks above MEMORY_HEADROOM of the memory that was free to this process.
    """
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    free, _ = torch.cuda.mem_get_info(device)
    budget = MEMORY_HEADROOM * (free + torch.cuda.memory_reserved(device))
    for batch in candidates:
        if _fits(backbone, device, batch, tokens, budget):
            return batch
    raise MedfmError(f"{backbone.spec.entry.name} at {backbone.spec.img_size} px does not fit in the free memory of "
                     f"{device} even one image at a time ({free / 2**30:.1f} GiB free)",
                     "free GPU memory (other processes), use a smaller --img-size, or --device cpu")


def _fits(backbone, device: torch.device, batch: int, tokens: bool, budget: float) -> bool:
    torch.cuda.reset_peak_memory_stats(device)
    oom = False
    try:
        with torch.inference_mode(), autocast(device):
            backbone.embed(model_input(backbone, device, batch), with_tokens=tokens)
        torch.cuda.synchronize(device)
    except RuntimeError as exc:  # torch.cuda.OutOfMemoryError, or cuBLAS/cuDNN failing to allocate
        if not isinstance(exc, torch.cuda.OutOfMemoryError) and not any(m in str(exc) for m in _OOM_MESSAGES):
            raise
        oom = True  # memory is freed after the except block, once the traceback's tensors are gone
    peak = torch.cuda.max_memory_allocated(device)
    torch.cuda.empty_cache()
    return not oom and peak <= budget


def compile_forward(backbone) -> None:
    """Replace ``backbone.tokens`` (the loader's image batch -> ``TokenOutput``) by its ``torch.compile``.

    Why that method: ``Backbone.embed`` runs every forward pass through it, pooled feature, ``--tokens``
    and ``--layers`` alike, so compiling it compiles the whole network, for every loader, as one graph
    (the feature pooling after it is one small op). Compiling each block instead hits dynamo's
    recompile limit on CNNs, whose blocks differ in shape. The forward hooks ``--layers`` and DINOv2's
    last-block tokens register on each call are traced inside the graph (tested: same outputs).
    """
    backbone.tokens = torch.compile(backbone.tokens)


def compile_backbone(backbone, device: torch.device, batch: int, split_sizes, tokens: bool) -> None:
    """``compile_forward``, then warm-up passes at every batch shape the run will see (the full batch and
    each split's last, shorter one), so that all compilation happens here, not mid-run, and a compiler
    failure is one clear error before any store is written (torch.compile compiles at the first call)."""
    from medfm.ui import console

    shapes = [batch] + sorted({n % batch for n in split_sizes} - {0}, reverse=True)
    console.print(f"compiling {backbone.spec.entry.name} with torch.compile (batch shapes {shapes}) ...")
    compile_forward(backbone)
    try:
        with torch.inference_mode(), autocast(device):
            for n in shapes:
                backbone.embed(model_input(backbone, device, n), with_tokens=tokens)
    except MedfmError:
        raise
    except Exception as exc:
        first = " ".join(str(exc).split()).split(" Set TORCHDYNAMO_VERBOSE")[0][:300]  # drop torch's debugging advice
        need = "; on CPU torch.compile needs a working C++ compiler (g++)" if device.type == "cpu" else ""
        raise MedfmError(f"torch.compile failed for {backbone.spec.entry.name} on {device}: {type(exc).__name__}: {first}",
                         f"rerun without --compile (features are the same, only slower){need}") from None
