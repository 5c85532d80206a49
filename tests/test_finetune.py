"""``medfm finetune`` on a real PneumoniaMNIST subset with the real DINOv2 ViT-S/14 weights at 56 px.

The subset (``pneu_subset`` in conftest: 64 train / 32 val / 32 test real images, PNGs with a
labels.csv) keeps each run to seconds; ``--fraction 0.5`` takes a stratified label budget of 32 train images from it.
Finetune subprocesses run with one thread each (as torchrun's workers do), so the single-process
reference and the 2-process run do the same arithmetic per sample.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.slow

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def ft_args(dataset, weights, out, *extra):
    return ("finetune", "--backbone", "dinov2_vits14", "--weights", weights, "--dataset", dataset, "--img-size", 56,
            "--unfreeze", 1, "--epochs", 2, "--batch-size", 16, "--fraction", 0.5, "--lr", 1e-4, "--seed", 0,
            "--deterministic", "--out", out, *extra)


def ft_config(dataset, weights, out, **kw):
    """The FinetuneConfig that ``ft_args`` spells as CLI options."""
    from medfm.finetune import FinetuneConfig

    base = dict(backbone="dinov2_vits14", weights=str(weights), dataset=str(dataset), img_size=56, unfreeze=1, epochs=2,
                batch_size=16, fraction=0.5, lr=1e-4, seed=0, deterministic=True, out=str(out))
    return FinetuneConfig(**{**base, **kw})


@contextmanager
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def reference(session_cli, pneu_subset, dinov2_s_weights):
    """One uninterrupted single-process run (unfreeze 1), in this process with one thread: the
    baseline that the CLI's killed-and-resumed run and the torchrun run are compared with."""
    from medfm.finetune import run_finetune

    with one_thread():
        return run_finetune(ft_config(pneu_subset, dinov2_s_weights, session_cli.workdir / "ft-reference",
                                      results=str(session_cli.workdir / "runs" / "results.sqlite")))


def _fresh_backbone_state(weights) -> dict[str, torch.Tensor]:
    from medfm.backbones import create_backbone

    return create_backbone("dinov2_vits14", weights=str(weights), img_size=56).net.state_dict()


def test_record_shape_and_results_store(reference):
    from medfm.results import ResultsStore

    assert reference["kind"] == "finetune" and reference["unfreeze"] == 1 and reference["blocks"] == 12
    assert reference["n"] == {"train": 32, "val": 32, "test": 32}  # fraction 0.5 of 64, stratified
    head = reference["headline_metric"]
    assert {k: head[k] for k in ("name", "value", "bootstrap")} == {"name": "roc_auc", "value": reference["test"]["roc_auc"],
                                                                   "bootstrap": 1000}
    low, high = head["ci95"]  # the test-set CI fine-tunes now record (percentile, 1000 resamples)
    assert low <= head["value"] <= high
    assert [h["epoch"] for h in reference["history"]] == [1, 2]
    assert all(np.isfinite(h["train_loss"]) and 0 <= h["val_roc_auc"] <= 1 for h in reference["history"])
    rows = ResultsStore(reference["results_store"]).records(kind="finetune")
    assert any(r["run_key"] == reference["run_key"] and r["history"] == reference["history"] for r in rows)
    saved = json.loads(open(f"{reference['out']}/config.json").read())["finetune"]
    assert saved["unfreeze"] == 1 and saved["fraction"] == 0.5
    assert os.path.getsize(f"{reference['out']}/history.png") > 0


def test_unfreeze_1_trains_exactly_the_last_block_and_final_norm(reference, dinov2_s_weights):
    trained = torch.load(f"{reference['out']}/model.pt", weights_only=True)
    fresh = _fresh_backbone_state(dinov2_s_weights)
    assert {k[4:] for k in trained if k.startswith("net.")} == set(fresh)
    changed = {k for k, v in fresh.items() if not torch.equal(trained["net." + k], v)}
    intended = {k for k in fresh if k.startswith(("blocks.11.", "norm."))}
    assert changed == intended, (sorted(changed - intended)[:5], sorted(intended - changed)[:5])
    assert trained["head.weight"].abs().sum() > 0  # the zero-initialised head trained too


def test_refuses_to_overwrite_a_finished_run(reference, pneu_subset, dinov2_s_weights):
    from medfm.errors import MedfmError
    from medfm.finetune import run_finetune

    with pytest.raises(MedfmError, match="already exists.*--overwrite"):
        run_finetune(ft_config(pneu_subset, dinov2_s_weights, reference["out"]))


def test_killed_run_resumes_to_the_uninterrupted_result(cli, reference, pneu_subset, dinov2_s_weights, tmp_path):
    out = tmp_path / "killed"
    args = ft_args(pneu_subset, dinov2_s_weights, out)
    proc = subprocess.Popen(cli.cmd(*args), cwd=cli.workdir, env={**cli.env, **ONE_THREAD},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not (out / "last.pt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished (or failed) before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "results.json").exists()
    epoch_at_kill = torch.load(out / "last.pt", weights_only=False)["state"]["epoch"] + 1
    assert epoch_at_kill == 1

    proc = cli(*args, "--resume", "--json", env=ONE_THREAD)
    assert "resuming" in proc.stderr
    resumed = json.loads(proc.stdout)
    for key in ("history", "val", "test", "best_epoch", "run_key"):
        assert resumed[key] == reference[key], key


def test_two_process_torchrun_matches_one_process(cli, reference, pneu_subset, dinov2_s_weights, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "medfm",
           *map(str, ft_args(pneu_subset, dinov2_s_weights, tmp_path / "ddp", "--json"))]
    proc = subprocess.run(cmd, cwd=cli.workdir, env={**cli.env, **ONE_THREAD}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads(proc.stdout)  # only rank 0 prints
    assert ddp["world_size"] == 2 and ddp["n"] == reference["n"]
    # Same global batch (2 x 8 vs 16), same samples per step: only float summation order differs.
    for a, b in zip(ddp["history"], reference["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_roc_auc"] == pytest.approx(b["val_roc_auc"], abs=0.02)
    for split in ("val", "test"):
        for m, v in reference[split].items():
            assert ddp[split][m] == pytest.approx(v, abs=0.02), (split, m)


def test_frozen_linear_finetune_agrees_with_the_linear_probe(pneu_subset, dinov2_s_weights, tmp_path):
    """--unfreeze 0 --head linear vs medfm probe --head linear on the same DINOv2 features.

    Both are set up to solve the same problem the same way: features in float32, no augmentation,
    one full batch of 64 per step (so sample order cannot matter), Adam (AdamW with weight decay 0),
    the same learning rate and cosine schedule without warm-up, a zero-initialised head, no
    standardisation, and the last epoch's head tested. What remains different is how the features
    are computed (once into the cache vs live through the fine-tune model), so the two must agree
    to float rounding: every val/test metric within 1e-3.
    """
    from medfm.config import ExtractConfig, ProbeConfig
    from medfm.extract import run_extract
    from medfm.finetune import FinetuneConfig, run_finetune
    from medfm.probe import run_probe

    with one_thread():
        common = dict(backbone="dinov2_vits14", weights=str(dinov2_s_weights), dataset=str(pneu_subset), img_size=56)
        store = str(tmp_path / "results.sqlite")
        cache = run_extract(ExtractConfig(**common, dtype="float32", cache=str(tmp_path / "c.zarr"), num_workers=0)).cache
        # min_steps=1: the probe takes exactly the fine-tune's 5 full-batch steps (its default floor is 200)
        probe = run_probe(ProbeConfig(cache=str(cache), solver="grid", lrs=[0.01], wds=[0.0], normalize="none", epochs=5, batch_size=64,
                                      min_steps=1,
                                      out=str(tmp_path / "probe"), results=store))
        ft = run_finetune(FinetuneConfig(**common, unfreeze=0, head="linear", epochs=5, batch_size=64, lr=0.01,
                                         weight_decay=0.0, warmup_steps=0, grad_clip=None, augment="none", keep="last",
                                         deterministic=True, num_workers=0, out=str(tmp_path / "ft"), results=store))
    assert ft["feature"] == probe["feature"] == "cls" and ft["n"] == probe["n"]
    assert probe["test"]["roc_auc"] > 0.75  # the heads learned something, so agreement is not trivial
    for split in ("val", "test"):
        for m, v in probe[split].items():
            assert ft[split][m] == pytest.approx(v, abs=1e-3), (split, m, ft[split][m], v)
    # and with --unfreeze 0 the whole backbone is bit-identical to the weights file
    trained = torch.load(tmp_path / "ft" / "model.pt", weights_only=True)
    assert all(torch.equal(trained["net." + k], v) for k, v in _fresh_backbone_state(dinov2_s_weights).items())
    from medfm.results import ResultsStore

    kinds = sorted(r["kind"] if "kind" in r else "probe" for r in ResultsStore(store).records())
    assert kinds == ["finetune", "probe"]


def test_deit_head_is_built_from_the_head_registry_and_reads_tokens():
    from medfm.errors import MedfmError
    from medfm.finetune import FinetuneConfig
    from medfm.heads import HEADS

    cfg = FinetuneConfig(backbone="dinov2_vits14", dataset="x", head="deit", head_depth=1, deit_weights="random")
    entry = HEADS.get("deit")
    assert entry.reads == "tokens" and "finetune" in entry.stages
    head = entry.build_module(384, 2, cfg, 16)
    assert head(torch.randn(3, 16, 384)).shape == (3, 2)
    with pytest.raises(MedfmError, match="knn head has no finetune stage"):
        HEADS.get("knn").build_module(384, 2, cfg, 16)


def test_grad_accumulation_equals_the_big_batch_with_balanced_sampling_and_early_stop(pneu_subset, dinov2_s_weights,
                                                                                     tmp_path):
    """batch 8 x 2 accumulated steps == batch 16 (same samples per update); class weights, balanced
    sampling and early stopping on, at 28 px to keep it cheap."""
    from medfm.finetune import run_finetune

    runs = {}
    with one_thread():
        for batch, accum in ((16, 1), (8, 2)):
            runs[accum] = run_finetune(ft_config(
                pneu_subset, dinov2_s_weights, tmp_path / f"b{batch}", img_size=28, batch_size=batch, grad_accum=accum,
                epochs=4, fraction=1.0, lr=1e-3, class_weight=True, balanced_sampling=True, early_stop_patience=1,
                num_workers=0, results=str(tmp_path / "r.sqlite")))
    a, b = runs[1], runs[2]
    assert len(a["history"]) == len(b["history"])
    for x, y in zip(a["history"], b["history"]):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-4)
        assert x["val_roc_auc"] == pytest.approx(y["val_roc_auc"], abs=0.02)
    for r in (a, b):
        vals = [h["val_roc_auc"] for h in r["history"]]
        assert r["best_epoch"] == 1 + int(np.argmax(vals))
        if r["stopped_early"]:  # patience 1: the epoch after the best did not improve, and training stopped there
            assert r["epochs_run"] == r["best_epoch"] + 1 < 4
        else:
            assert r["epochs_run"] == 4


@pytest.mark.gpu
def test_bf16_and_grad_checkpointing_train_on_cuda(pneu_subset, dinov2_s_weights, tmp_path):
    from medfm.finetune import run_finetune

    rec = run_finetune(ft_config(pneu_subset, dinov2_s_weights, tmp_path / "gpu", device="cuda", amp=True,
                                 grad_checkpointing=True, deterministic=False, results=str(tmp_path / "r.sqlite")))
    assert rec["device"].startswith("cuda") and all(np.isfinite(h["train_loss"]) for h in rec["history"])
    assert rec["test"]["roc_auc"] > 0.5
