"""`--batch-size auto` and `--compile` for extract: chunk-compatible batch sizes, resume, compiled == eager."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import zarr
from dataset_trees import write_csv, write_png

from medfm.cache import FeatureCache
from medfm.cache.store import read_meta
from medfm.config import ExtractConfig
from medfm.errors import MedfmError
from medfm.extract import run_extract
from medfm.extract.tuning import AUTO_BATCH_CAP, auto_cap, batch_candidates, choose_batch_size

CPU = torch.device("cpu")
MB = 1 << 20


def tiny_manifest(root, n_train=24, n_val=4, n_test=4):
    """Real PNGs of random pixels with an explicit split: rows come in a known order (train first)."""
    rows = []
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        for i in range(n):
            name = f"{split}/{i:03d}.png"
            write_png(root / name, value=len(rows), size=(40, 36))
            rows.append([name, "a" if i % 2 else "b", split])
    return write_csv(root / "labels.csv", ["path", "label", "split"], rows)


def test_auto_batch_candidates_divide_a_fixed_chunk_and_put_the_resumed_size_first():
    assert batch_candidates(64) == [64, 32, 16, 8, 4, 2, 1]
    assert batch_candidates(100) == [64, 32, 16, 8, 4, 2, 1]  # powers of two only
    assert batch_candidates(1024, chunk_rows=96) == [32, 16, 8, 4, 2, 1]
    assert batch_candidates(1024, chunk_rows=1000) == [8, 4, 2, 1]
    assert batch_candidates(1024, chunk_rows=480, resumed=48) == [48, 32, 16, 8, 4, 2, 1]
    assert batch_candidates(1024, chunk_rows=7) == [1]
    # a batch's output rows never outgrow one chunk's byte target
    assert auto_cap(row_bytes=768 * 2, chunk_target_bytes=32 * MB) == AUTO_BATCH_CAP
    assert auto_cap(row_bytes=257 * 768 * 2 + 768 * 2, chunk_target_bytes=32 * MB) == 64  # ViT-B tokens: 396 kB a row
    assert auto_cap(row_bytes=64 * MB, chunk_target_bytes=32 * MB) == 1


def test_auto_batch_on_cpu_is_fixed_and_fits_the_chunking():
    def pick(**kw):
        return choose_batch_size("auto", None, CPU, False, 1536, 32 * MB, **kw)

    assert pick() == 64
    assert pick(chunk_rows=96) == 32  # --chunk-rows 96: 64 would straddle chunks
    assert pick(chunk_rows=8, resumed=4) == 4  # resuming: the store's own batch size, not the largest divisor (8)
    assert pick(chunk_rows=1024, resumed=256) == 256
    assert choose_batch_size(48, None, CPU, False, 1536, 32 * MB) == 48  # a number is taken as given
    assert choose_batch_size("auto", None, CPU, True, 8 * MB, 32 * MB) == 4  # big token rows: 4 rows = one chunk's bytes


@pytest.mark.parametrize("bad", ["0", "many", "2.5", -3])
def test_batch_size_must_be_a_positive_number_or_auto(bad):
    with pytest.raises(MedfmError, match="batch_size.*positive whole number or 'auto'"):
        ExtractConfig.load(None, {"backbone": "mobilenetv2", "dataset": "x", "batch_size": bad})
    assert ExtractConfig.load(None, {"backbone": "b", "dataset": "x", "batch_size": " Auto "}).batch_size == "auto"
    assert ExtractConfig.load(None, {"backbone": "b", "dataset": "x", "batch_size": "32"}).batch_size == 32


def test_auto_batch_size_resumes_with_the_stores_batch_size(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import medfm.data.manifest as manifest_module
    from medfm.cli import app
    from medfm.data.images import ImageReadError

    manifest = tiny_manifest(tmp_path / "data", n_train=20, n_val=2, n_test=2)
    common = dict(backbone="efficientnet_lite0", dataset=str(manifest), weights="random", img_size=32, num_workers=0,
                  dtype="float32")
    reference = run_extract(ExtractConfig(**common, batch_size=4, chunk_rows=8, cache=str(tmp_path / "ref.zarr")))

    # row 17: chunk 2 of train (rows 16-19) fails, chunks 0-1 are done. The failure is a transient read error (a
    # network file system's hiccup): changing the file's bytes would change the dataset's content identity instead
    read = manifest_module.read_image

    def flaky(path):
        if path.name == "017.png":
            raise ImageReadError(path, "I/O error (transient)", "retry")
        return read(path)

    monkeypatch.setattr(manifest_module, "read_image", flaky)
    target = tmp_path / "resumed.zarr"
    with pytest.raises(MedfmError, match="017.png"):
        run_extract(ExtractConfig(**common, batch_size=4, chunk_rows=8, cache=str(target)))
    assert zarr.open_group(str(target), mode="r")["train"]["done"][:].tolist() == [1, 1, 0]
    monkeypatch.setattr(manifest_module, "read_image", read)

    # auto would pick 8 (the largest power of two dividing the store's 8-row chunks); resuming, it keeps 4
    args = ["extract", "--backbone", "efficientnet_lite0", "--dataset", str(manifest), "--weights", "random",
            "--img-size", "32", "--num-workers", "0", "--dtype", "float32", "--batch-size", "auto", "--cache", str(target),
            "--json"]
    out = CliRunner().invoke(app, args)  # the real CLI, in this process
    assert out.exit_code == 0, out.output
    assert "--batch-size auto -> 4 (the resumed cache's own)" in " ".join(out.stderr.split())
    assert '"extracted": 8' in out.stdout  # train's last chunk (4) + val (2) + test (2); done chunks not redone
    a, b = FeatureCache(reference.cache), FeatureCache(target)
    for s in ("train", "val", "test"):
        assert np.array_equal(a.features(s), b.features(s)), s


def test_auto_batch_size_fresh_run_records_what_it_chose(tmp_path):
    manifest = tiny_manifest(tmp_path / "data", n_train=6, n_val=2, n_test=2)
    result = run_extract(ExtractConfig(backbone="efficientnet_lite0", dataset=str(manifest), weights="random", img_size=32,
                                       num_workers=0, batch_size="auto", chunk_rows=12, cache=str(tmp_path / "c.zarr")))
    meta = read_meta(result.cache)
    assert meta["extract"]["batch_size"] == 4 and meta["extract"]["chunk_rows"] == 12  # largest power of two dividing 12
    assert meta["extract"]["config"]["batch_size"] == "auto"  # the request is what a rerun of the config repeats
    assert meta["extract"]["compile"] is False


@pytest.mark.skipif(not (shutil.which("g++") or shutil.which("c++")), reason="torch.compile on CPU needs a C++ compiler")
def test_compile_gives_the_eager_features_on_cpu(tmp_path):
    """A real ViT (DINOv2-S layout, random init) compiled by inductor vs eager, with last-block tokens (forward hook).

    Batch size 1 keeps every batch one shape, so the network compiles once (~20-30 s on 2 cores)."""
    from torch._dynamo.utils import counters

    manifest = tiny_manifest(tmp_path / "data", n_train=4, n_val=2, n_test=2)
    common = dict(backbone="dinov2_vits14", dataset=str(manifest), weights="random", img_size=28, num_workers=0,
                  dtype="float32", tokens=True, batch_size=1)
    eager = run_extract(ExtractConfig(**common, cache=str(tmp_path / "eager.zarr")))
    counters.clear()
    compiled = run_extract(ExtractConfig(**common, compile=True, cache=str(tmp_path / "compiled.zarr")))
    assert counters["stats"]["unique_graphs"] >= 1  # the blocks really went through torch.compile
    assert compiled.fingerprint == eager.fingerprint  # same features: compile is not part of the request
    assert read_meta(compiled.cache)["extract"]["compile"] is True
    a, b = FeatureCache(eager.cache), FeatureCache(compiled.cache)
    for s in ("train", "val", "test"):
        np.testing.assert_allclose(b.features(s), a.features(s), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(b.tokens(s), a.tokens(s), rtol=1e-4, atol=1e-5)


def _cosine(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.gpu
def test_auto_batch_on_cuda_backs_off_to_the_largest_batch_that_fits():
    from medfm.backbones import create_backbone
    from medfm.extract.tuning import _fits, largest_fitting

    cuda = torch.device("cuda")
    backbone = create_backbone("dinov2_vitb14", weights="random", img_size=224, device=cuda)
    total = torch.cuda.get_device_properties(cuda).total_memory
    torch.cuda.set_per_process_memory_fraction(2 * 2**30 / total, cuda)  # 2 GiB for this process: 1024 images cannot fit
    try:
        batch = largest_fitting(batch_candidates(AUTO_BATCH_CAP), backbone, cuda, tokens=False)
        assert 1 <= batch < AUTO_BATCH_CAP and batch & (batch - 1) == 0, batch
        assert _fits(backbone, cuda, batch, False, float("inf"))
        assert not _fits(backbone, cuda, 2 * batch, False, float("inf"))  # the next power of two runs out of memory
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, cuda)


@pytest.mark.gpu
def test_auto_batch_and_compile_on_cuda_give_the_default_runs_features(tmp_path):
    manifest = tiny_manifest(tmp_path / "data", n_train=40, n_val=8, n_test=8)
    common = dict(backbone="dinov2_vits14", dataset=str(manifest), weights="random", img_size=112, device="cuda",
                  dtype="float32", tokens=True)
    default = run_extract(ExtractConfig(**common, cache=str(tmp_path / "default.zarr")))
    auto = run_extract(ExtractConfig(**common, batch_size="auto", compile=True, cache=str(tmp_path / "auto.zarr")))
    meta = read_meta(auto.cache)["extract"]
    assert meta["compile"] is True and meta["batch_size"] >= 64 and meta["chunk_rows"] % meta["batch_size"] == 0
    a, b = FeatureCache(default.cache), FeatureCache(auto.cache)
    for s in ("train", "val", "test"):  # bf16 both ways; other batch shapes and fused kernels round differently
        assert _cosine(a.features(s), b.features(s)).min() > 0.999, s
