"""Interrupted extraction resumes to the same bytes; finished caches are reused, never redone;
torchrun ranks share the work and write the same cache as one process.

Every subprocess here runs one torch thread (torchrun's workers default to that), so the
single-process reference and the 2-rank runs do the same arithmetic per batch and their features
can be compared byte for byte.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from conftest import Cli

from medfm.cache import FeatureCache

pytestmark = pytest.mark.slow

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
N_CHUNKS = 69 + 10 + 20  # breastmnist train/val/test in chunks of 8 rows


def extract_args(data_root, weights, cache, batch=4):
    # tiny batches and chunks by default, so a kill lands mid-run with many chunks still to do
    return ("extract", "--backbone", "dinov2_vits14", "--dataset", "breastmnist", "--weights", weights,
            "--img-size", 56, "--batch-size", batch, "--chunk-rows", 2 * batch, "--data-root", data_root,
            "--cache", cache)


def done_flags(path) -> dict[str, np.ndarray]:
    try:
        g = zarr.open_group(str(path), mode="r")
        return {s: g[s]["done"][:] for s in g.group_keys()}
    except Exception:
        return {}


def done_chunks(path) -> int:
    return int(sum(flags.sum() for flags in done_flags(path).values()))


def assert_same_cache(a_path, b_path) -> None:
    a, b = FeatureCache(a_path), FeatureCache(b_path)
    for s in ("train", "val", "test"):
        assert np.array_equal(a.features(s), b.features(s)), s
        assert a.ids(s) == b.ids(s) and np.array_equal(a.labels(s), b.labels(s))


@pytest.fixture(scope="module")
def one_cli(tmp_path_factory) -> Cli:
    cli = Cli(tmp_path_factory.mktemp("resume"))
    cli.env.update(ONE_THREAD)
    return cli


@pytest.fixture(scope="module")
def reference(one_cli, data_root, dinov2_s_weights) -> Path:
    """One uninterrupted single-process extraction that the killed, resumed and torchrun runs must equal."""
    rec = one_cli.json(*extract_args(data_root, dinov2_s_weights, one_cli.workdir / "ref.zarr"))
    assert rec["extracted"] == 780 and rec["world_size"] == 1
    return Path(rec["cache"])


def test_killed_extract_resumes_to_identical_features(one_cli, reference, data_root, dinov2_s_weights, tmp_path):
    cli = one_cli
    target = tmp_path / "killed.zarr"
    proc = subprocess.Popen(cli.cmd(*extract_args(data_root, dinov2_s_weights, target)), cwd=cli.workdir, env=cli.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while done_chunks(target) < 5 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "extraction finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = done_chunks(target)
    assert 5 <= killed_at < N_CHUNKS
    assert "incomplete" in cli.error("probe", "--cache", target)

    resumed = cli.json(*extract_args(data_root, dinov2_s_weights, target))
    assert 0 < resumed["extracted"] <= 780 - 8 * 5  # finished chunks were not recomputed
    assert_same_cache(reference, target)


def test_finished_cache_is_reused_and_foreign_request_refused(one_cli, reference, data_root, dinov2_s_weights):
    cli, path = one_cli, reference
    args = extract_args(data_root, dinov2_s_weights, path)
    stamps = {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}
    again = cli.json(*args)
    assert again == {**again, "extracted": 0, "reused": True}
    assert {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()} == stamps

    line = cli.error(*extract_args(data_root, "random", path))
    assert "was made for a different request" in line and "weights" in line and "--cache" in line
    line = cli.error(*args[:-2], "--cache", path, "--backbone", "mobilenetv2")
    assert "different request" in line and "mobilenetv2" in line


def torchrun(*args) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "medfm",
            *map(str, args)]


def worker_pid(agent: int, rank: int) -> int | None:
    """The pid of torchrun's worker process with the given RANK (a direct child of the agent)."""
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            ppid = int((p / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (p / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == agent and f"RANK={rank}".encode() in env:
            return int(p.name)
    return None


def test_two_torchrun_ranks_write_the_same_cache_as_one_process(one_cli, reference, data_root, dinov2_s_weights, tmp_path):
    cmd = torchrun(*extract_args(data_root, dinov2_s_weights, tmp_path / "two.zarr"), "--json")
    proc = subprocess.run(cmd, cwd=one_cli.workdir, env=one_cli.env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads(proc.stdout)  # only rank 0 prints
    assert rec["world_size"] == 2 and rec["extracted"] == 780 and not rec["reused"]
    assert_same_cache(reference, tmp_path / "two.zarr")


def test_killed_rank_leaves_only_its_chunks_and_the_rerun_does_just_those(one_cli, reference, data_root, dinov2_s_weights,
                                                                          tmp_path):
    target = tmp_path / "killed-rank.zarr"
    args = extract_args(data_root, dinov2_s_weights, target)
    proc = subprocess.Popen(torchrun(*args), cwd=one_cli.workdir, env=one_cli.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while done_chunks(target) < 6 and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, "extraction finished before a rank could be killed"
        rank1 = worker_pid(proc.pid, 1)
        assert rank1 is not None, "torchrun's rank-1 worker not found"
        os.kill(rank1, signal.SIGKILL)
        assert proc.wait(timeout=120) != 0  # torchrun notices the lost rank, stops the other one and fails
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # stray decoding workers, if any
        except ProcessLookupError:
            pass

    flags = done_flags(target)
    assert 6 <= done_chunks(target) < N_CHUNKS
    assert "incomplete" in one_cli.error("probe", "--cache", target)
    n = {s: len(FeatureCache(reference).ids(s)) for s in flags}
    left = sum(min(8, n[s] - 8 * int(c)) for s, f in flags.items() for c in np.flatnonzero(f == 0))
    kept = {p: p.stat().st_mtime_ns for s, f in flags.items() for c in np.flatnonzero(f == 1)
            for p in (target / s / "features" / "c" / str(c)).rglob("*") if p.is_file()}
    assert len(kept) == done_chunks(target)

    proc = subprocess.run(torchrun(*args, "--json"), cwd=one_cli.workdir, env=one_cli.env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rerun = json.loads(proc.stdout)
    assert rerun["world_size"] == 2 and rerun["extracted"] == left  # exactly the missing chunks' rows ...
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # ... and no finished chunk rewritten
    assert_same_cache(reference, target)
