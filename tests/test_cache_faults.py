"""Attacks on caches (issue 12): concurrent writers, deleted / truncated / swapped chunks, disk full,
unreadable metadata. Real data (a PneumoniaMNIST subset), real MobileNetV2 weights at 32 px, real
processes where the CLI or a second process is the point; each test asserts the exact outcome:
the error line, nothing reused, and a rerun that recovers to the uninterrupted run's arrays.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import zarr
from conftest import Cli

from medfm.cache import FEATURES, FeatureCache, export_h5, fingerprint, open_store
from medfm.cache.lifecycle import Writing
from medfm.cache.lock import WriterLock, lock_path
from medfm.cache.store import write_meta
from medfm.config import ExtractConfig, PrepareConfig, ProbeConfig
from medfm.errors import MedfmError
from medfm.extract import run_extract
from medfm.pixels import run_prepare
from medfm.probe.runner import run_probe

CHUNK = 16  # rows per chunk: pneu_subset has 64 train / 32 val / 32 test rows, so 4 + 2 + 2 chunks


@pytest.fixture(scope="module")
def base(pneu_subset, mobilenet_weights) -> dict:
    return dict(backbone="mobilenetv2", weights=str(mobilenet_weights), dataset=str(pneu_subset), img_size=32,
                batch_size=CHUNK, chunk_rows=CHUNK, num_workers=0, pixels="none")


@pytest.fixture(scope="module")
def reference(base, tmp_path_factory) -> dict:
    """One uninterrupted extraction: every attacked store must come back to exactly these arrays."""
    path = tmp_path_factory.mktemp("ref") / "ref.zarr"
    run_extract(ExtractConfig(**base, cache=str(path)))
    cache = FeatureCache(path)
    return {"path": path, **{s: cache.features(s) for s in cache.splits}}


def copy_of(reference, tmp_path, name="c.zarr") -> Path:
    shutil.copytree(reference["path"], tmp_path / name)
    shutil.copy(reference["path"].with_name("ref.zarr.splits.csv"), tmp_path / f"{name}.splits.csv")
    return tmp_path / name


def assert_equals_reference(path, reference) -> None:
    cache = FeatureCache(path)
    for s in cache.splits:
        assert np.array_equal(cache.features(s), reference[s]), s


def chunk_file(store: Path, split: str, array: str, chunk: int) -> Path:
    return next(p for p in (store / split / array / "c" / str(chunk)).rglob("*") if p.is_file())


ATTACKS = {
    "deleted": (lambda s: shutil.rmtree(s / "train" / "features" / "c" / "2"), "train/features chunk 2 (rows 32-47) is missing"),
    "truncated": (lambda s: chunk_file(s, "train", "features", 2).write_bytes(chunk_file(s, "train", "features", 2).read_bytes()[:40]),
                  "train/features chunk 2 (rows 32-47) cannot be decoded (truncated or corrupt)"),
    "swapped": (lambda s: shutil.copy(chunk_file(s, "train", "features", 0), chunk_file(s, "train", "features", 2)),
                "train/features chunk 2 (rows 32-47) does not match its recorded digest"),
}


@pytest.mark.parametrize("attack", ATTACKS)
def test_bad_feature_chunk_stops_every_reader_and_a_rerun_recomputes_just_it(attack, reference, base, tmp_path):
    store = copy_of(reference, tmp_path)
    damage, line = ATTACKS[attack]
    damage(store)
    with pytest.raises(MedfmError, match=line.replace("(", r"\(").replace(")", r"\)")) as err:
        run_probe(ProbeConfig(cache=str(store), head="knn", out=str(tmp_path / "run"), bootstrap=0))
    assert str(store) in str(err.value) and "medfm cache verify" in str(err.value)
    with pytest.raises(MedfmError, match="chunk 2"):
        FeatureCache(store).features("train")
    rerun = run_extract(ExtractConfig(**base, cache=str(store)))  # not "reused": exactly the bad chunk is redone
    assert not rerun.reused and rerun.extracted == CHUNK
    assert_equals_reference(store, reference)


def test_unfinished_store_with_a_deleted_done_chunk_resumes_that_chunk(reference, base, tmp_path):
    store = copy_of(reference, tmp_path)
    write_meta(store, {**zarr.open_group(str(store), mode="r").attrs["medfm"], "complete": False})
    shutil.rmtree(store / "val" / "features" / "c" / "1")  # flagged done, but its data is gone
    rerun = run_extract(ExtractConfig(**base, cache=str(store)))
    assert rerun.extracted == CHUNK
    assert_equals_reference(store, reference)


def test_h5_cache_carries_digests_and_a_corrupt_chunk_is_repaired(reference, base, tmp_path):
    path = tmp_path / "c.h5"
    export_h5(copy_of(reference, tmp_path), path)  # what `--format h5` writes
    shutil.copy(tmp_path / "c.zarr.splits.csv", tmp_path / "c.h5.splits.csv")
    with h5py.File(path, "r") as f:
        assert f["train/digests"].shape == (4, 1) and f["train/done"][:].all()
        info = f["test/features"].id.get_chunk_info(1)
    with open(path, "r+b") as f:  # flip bytes inside test/features chunk 1
        f.seek(info.byte_offset + 8)
        f.write(b"\xff\x7f" * 8)
    with pytest.raises(MedfmError, match=r"test/features chunk 1 \(rows 16-31\) does not match its recorded digest"):
        FeatureCache(path).features("test")
    assert run_extract(ExtractConfig(**base, cache=str(path), format="h5")).extracted == CHUNK
    assert_equals_reference(path, reference)
    assert not path.with_name("c.h5.partial.zarr").exists()


def test_cache_verify_cli_names_bad_chunks_and_repairs(reference, tmp_path):
    store = copy_of(reference, tmp_path)
    cli = Cli(tmp_path)
    ATTACKS["swapped"][0](store)
    shutil.rmtree(store / "test" / "features" / "c" / "0")
    line = cli.error("cache", "verify", store)
    assert line == (f"medfm: error: feature cache {store}: train/features chunk 2 (rows 32-47) does not match its recorded "
                    f"digest (corrupt, or another chunk's data) (and 1 more bad chunks) — `medfm cache verify {store} "
                    "--repair` recomputes exactly those chunks")
    rec = cli.json("cache", "verify", store, "--repair")
    assert len(rec["repaired"]) == 2 and rec["chunks"] == 8
    assert_equals_reference(store, reference)


def test_bad_pixel_chunk_stops_extract_and_prepare_repairs_it(pneu_subset, base, tmp_path):
    pixels = tmp_path / "pixels.zarr"
    prep = PrepareConfig(dataset=str(pneu_subset), size=40, chunk_rows=8, workers=0, out=str(pixels))
    run_prepare(prep)
    good = zarr.open_group(str(pixels), mode="r")["val/images"][:]
    shutil.rmtree(pixels / "val" / "images" / "c" / "3")
    cfg = ExtractConfig(**{**base, "pixels": str(pixels)}, cache=str(tmp_path / "f.zarr"))
    with pytest.raises(MedfmError, match=rf"pixel cache {pixels}: val/images chunk 3 \(rows 24-31\) is missing — "
                                         r"rerun the same `medfm prepare`"):
        run_extract(cfg)
    assert run_prepare(prep).prepared == 8  # the rerun redoes exactly that chunk
    assert (zarr.open_group(str(pixels), mode="r")["val/images"][:] == good).all()
    # train, done before the bad pixels, is kept (val's first chunk too, unless the error surfaced before it was stored)
    assert run_extract(cfg).extracted in (48, 64)
    assert FeatureCache(tmp_path / "f.zarr").features("val").std() > 0


def test_second_writer_refuses_at_once_and_wait_reuses_the_result(reference, base, tmp_path):
    """A live writer (this process) holds the lock: another process with other weights refuses at once,
    naming this pid; one with --wait waits, then reuses what the writer finished (real processes)."""
    target = tmp_path / "shared.zarr"
    lock = WriterLock(target, "feature cache")
    lock.acquire()
    cli = Cli(tmp_path)
    args = ["extract", "--backbone", "mobilenetv2", "--dataset", base["dataset"], "--img-size", 32, "--batch-size", CHUNK,
            "--chunk-rows", CHUNK, "--num-workers", 0, "--pixels", "none", "--cache", target]
    line = cli.error(*args, "--weights", "random")
    assert line.startswith(f"medfm: error: feature cache {target} is being written by pid {os.getpid()} "
                           f"on host {socket.gethostname()} since ") and line.endswith("— wait for it, or pass --wait")
    assert not target.exists()
    log = tmp_path / "waiter.log"
    waiter = subprocess.Popen(cli.cmd(*args, "--weights", base["weights"], "--wait", "--json"), cwd=tmp_path, env=cli.env,
                              stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    deadline = time.time() + 120
    while "waiting for" not in log.read_text() and time.time() < deadline and waiter.poll() is None:
        time.sleep(0.2)
    assert "waiting for" in log.read_text(), log.read_text()
    copy_of(reference, tmp_path, "staged.zarr").rename(target)  # the other writer's store appears whole ...
    lock.release()  # ... and it lets go
    out, _ = waiter.communicate(timeout=120)
    rec = json.loads(out)
    assert waiter.returncode == 0 and rec["reused"] and rec["extracted"] == 0
    assert not lock_path(target).exists()
    with pytest.raises(MedfmError, match=r"was made for a different request \(backbone.weights.origin"):
        run_extract(ExtractConfig(**{**base, "weights": "random"}, cache=str(target)))  # another request: never reused
    assert_equals_reference(target, reference)  # the store holds what its metadata names


def test_stale_lock_of_a_dead_process_is_taken_over_and_foreign_host_lock_is_not(tmp_path):
    target = tmp_path / "c.zarr"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock_path(target).write_text(json.dumps({"host": socket.gethostname(), "pid": dead.pid, "since": time.time()}))
    said = []
    inputs = {"x": 1}
    store = open_store(target, FEATURES, fingerprint(inputs), inputs, say=said.append)
    assert isinstance(store, Writing) and f"left by pid {dead.pid}" in said[0] and "no longer running" in said[0]
    store.close()
    assert not lock_path(target).exists()
    lock_path(target).write_text(json.dumps({"host": "node-b", "pid": 1, "since": time.time()}))
    with pytest.raises(MedfmError, match=rf"is being written by pid 1 on host node-b since .* — wait for it, or pass "
                                         rf"--wait; if that job is no longer running, delete {lock_path(target)}"):
        open_store(target, FEATURES, fingerprint(inputs), inputs)


def test_unreadable_caches_are_one_line_errors(reference, base, tmp_path):
    cli = Cli(tmp_path)
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5\n")
    assert cli.error("probe", "--cache", text) == (
        f"medfm: error: {text} is not a medfm feature cache (not an HDF5 file: file signature not found) — "
        "pass the path `medfm extract` printed")
    with pytest.raises(MedfmError, match=rf"{text} exists and is not a medfm feature cache \(not an HDF5 file"):
        run_extract(ExtractConfig(**base, cache=str(text), format="h5"))
    bad_json = tmp_path / "bad.h5"
    with h5py.File(bad_json, "w") as f:
        f.attrs["medfm"] = "{not json"
    with pytest.raises(MedfmError, match="its 'medfm' attribute is not JSON"):
        FeatureCache(bad_json)
    store = copy_of(reference, tmp_path)
    meta = zarr.open_group(str(store), mode="r").attrs["medfm"]
    write_meta(store, {k: v for k, v in meta.items() if k != "dataset"})
    with pytest.raises(MedfmError, match=r"has incomplete metadata \(no dataset.name, dataset.task, dataset.classes\)"):
        FeatureCache(store)
    write_meta(store, {**meta, "format_version": 1})
    with pytest.raises(MedfmError, match=r"has format_version 1; this medfm reads only version 2"):
        FeatureCache(store)
    write_meta(store, {**meta, "format_version": 9})
    with pytest.raises(MedfmError, match="newer than this medfm reads"):
        FeatureCache(store)


@pytest.fixture
def small_disk(tmp_path):
    """A real tiny tmpfs (we run as root in CI); resized with ``remount(size)``."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=192k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (not root)")

    def remount(size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(mnt)], check=True)

    yield mnt, remount
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_during_zarr_write_and_h5_export(small_disk, reference, base):
    mnt, remount = small_disk
    store = mnt / "c.zarr"
    with pytest.raises(MedfmError, match=rf"^disk full writing {store}.* — free space .*then rerun the same command"):
        run_extract(ExtractConfig(**base, cache=str(store)))
    remount("8m")
    assert run_extract(ExtractConfig(**base, cache=str(store))).extracted > 0
    assert_equals_reference(store, reference)
    shutil.rmtree(store)

    h5 = mnt / "c.h5"  # its finished Zarr working store fits (a copy of the reference), the HDF5 export does not
    remount("2m")
    shutil.copytree(reference["path"], h5.with_name("c.h5.partial.zarr"))
    with pytest.raises(MedfmError, match=rf"^disk full writing {h5}: the export needs about .* MB"):
        run_extract(ExtractConfig(**base, cache=str(h5), format="h5"))  # refused before writing: no HDF5 crash
    assert not h5.exists() and not list(mnt.glob("*.tmp")) and h5.with_name("c.h5.partial.zarr").exists()
    remount("16m")
    again = run_extract(ExtractConfig(**base, cache=str(h5), format="h5"))
    assert again.reused and again.extracted == 0  # the finished working store is exported, nothing recomputed
    assert_equals_reference(h5, reference)
    assert not h5.with_name("c.h5.partial.zarr").exists()


def test_token_streaming_verifies_every_chunk_it_reads(tmp_path):
    """The DeiT head streams tokens chunk by chunk (``TokenRows``); a swapped token chunk stops it."""
    from test_cache import make_store

    from medfm.probe.tokens import TokenRows

    store = tmp_path / "t.zarr"
    w, *_ = make_store(store, n=10, chunk_rows=4, tokens=True)
    rng = np.random.default_rng(1)
    feats, toks = rng.normal(size=(10, 6)).astype(np.float16), rng.normal(size=(10, 5, 6)).astype(np.float16)
    for s in ("train", "test"):
        for c, (lo, hi) in enumerate(((0, 4), (4, 8), (8, 10))):
            w.write_chunk(s, c, feats[lo:hi], toks[lo:hi])
    w.finish()
    rows = TokenRows(FeatureCache(store).tokens("train"), np.array([1, 5, 6]))
    assert np.array_equal(np.concatenate([x for x, _ in rows.batches(2)]), toks[[1, 5, 6]].astype(np.float32))
    shutil.copy(chunk_file(store, "train", "tokens", 0), chunk_file(store, "train", "tokens", 1))
    rows = TokenRows(FeatureCache(store).tokens("train"), np.array([1, 5, 6]))
    with pytest.raises(MedfmError, match=r"train/tokens chunk 1 \(rows 4-7\) does not match its recorded digest"):
        list(rows.batches(2))
