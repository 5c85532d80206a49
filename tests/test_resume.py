"""Interrupted extraction resumes to the same bytes; finished caches are reused, never redone."""

import os
import signal
import subprocess
import time

import numpy as np
import pytest
import zarr

from medfm.cache import FeatureCache

pytestmark = pytest.mark.slow


def extract_args(data_root, weights, cache, batch=4):
    # tiny batches and chunks by default, so a kill lands mid-run with many chunks still to do
    return ("extract", "--backbone", "dinov2_vits14", "--dataset", "breastmnist", "--weights", weights,
            "--img-size", 56, "--batch-size", batch, "--chunk-rows", 2 * batch, "--data-root", data_root,
            "--cache", cache)


def done_chunks(path) -> int:
    try:
        g = zarr.open_group(str(path), mode="r")
        return int(sum(g[s]["done"][:].sum() for s in g.group_keys()))
    except Exception:
        return 0


def test_killed_extract_resumes_to_identical_features(cli, data_root, dinov2_s_weights, tmp_path):
    reference = cli.json(*extract_args(data_root, dinov2_s_weights, tmp_path / "ref.zarr"))
    assert reference["extracted"] == 780

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
    assert 5 <= killed_at < 98  # 69 + 10 + 20 chunks in all
    assert "incomplete" in cli.error("probe", "--cache", target)

    resumed = cli.json(*extract_args(data_root, dinov2_s_weights, target))
    assert 0 < resumed["extracted"] <= 780 - 8 * 5  # finished chunks were not recomputed
    a, b = FeatureCache(tmp_path / "ref.zarr"), FeatureCache(target)
    for s in ("train", "val", "test"):
        assert np.array_equal(a.features(s), b.features(s)), s
        assert a.ids(s) == b.ids(s) and np.array_equal(a.labels(s), b.labels(s))


def test_finished_cache_is_reused_and_foreign_request_refused(cli, data_root, dinov2_s_weights, tmp_path):
    path = tmp_path / "c.zarr"
    args = extract_args(data_root, dinov2_s_weights, path, batch=32)
    cli.json(*args)
    stamps = {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()}
    again = cli.json(*args)
    assert again == {**again, "extracted": 0, "reused": True}
    assert {p: p.stat().st_mtime_ns for p in path.rglob("*") if p.is_file()} == stamps

    line = cli.error(*extract_args(data_root, "random", path, batch=32))
    assert "was made for a different request" in line and "weights" in line and "--cache" in line
    line = cli.error(*args[:-2], "--cache", path, "--backbone", "mobilenetv2")
    assert "different request" in line and "mobilenetv2" in line
