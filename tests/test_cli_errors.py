"""Bad input: one clear line naming the problem and the fix, exit status 2, no traceback."""

import shutil

import numpy as np
import pytest


def test_unknown_names_suggest_close_matches(cli):
    line = cli.error("extract", "--backbone", "dinov2-vits14", "--dataset", "busi")
    assert "unknown backbone 'dinov2-vits14'" in line and "did you mean 'dinov2_vits14'" in line
    line = cli.error("extract", "--backbone", "resnet50", "--dataset", "breast_mnist", "--weights", "random")
    assert "unknown dataset 'breast_mnist'" in line and "breastmnist" in line


def test_missing_data_file(cli, tmp_path):
    line = cli.error("extract", "--backbone", "resnet50", "--weights", "random", "--dataset", "pneumoniamnist",
                     "--data-root", tmp_path)
    assert "pneumoniamnist.npz not found" in line and "--data-root" in line


def test_corrupt_image_is_named(cli, tmp_path, data_root):
    for cls in ("benign", "malignant"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for f in sorted((data_root / "busi" / "images" / cls).iterdir())[:6]:
            shutil.copy(f, tmp_path / "imgs" / cls / f.name)
    bad = sorted((tmp_path / "imgs" / "malignant").iterdir())[2]
    bad.write_bytes(bad.read_bytes()[:200])  # truncated PNG
    line = cli.error("extract", "--backbone", "resnet50", "--weights", "random", "--dataset", tmp_path / "imgs",
                     "--img-size", 64)
    assert bad.name in line and "unreadable or corrupt image" in line


def test_labels_outside_class_range(cli, tmp_path, data_root):
    src = dict(np.load(data_root / "breastmnist.npz"))
    src["train_labels"] = src["train_labels"].copy()
    src["train_labels"][3] = 2
    np.savez(tmp_path / "breastmnist.npz", **src)
    line = cli.error("extract", "--backbone", "resnet50", "--weights", "random", "--dataset", "breastmnist",
                     "--data-root", tmp_path)
    assert "train_labels[3] = 2 is outside the class range 0..1" in line


def test_hub_unreachable_says_so_and_suggests_weights(cli, tmp_path):
    env = {"MEDFM_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")}
    line = cli.error("extract", "--backbone", "dinov2_vitb14", "--dataset", "busi", env=env)
    assert "cannot download the pretrained weights of 'dinov2_vitb14'" in line and "--weights PATH" in line


def test_hub_unreachable_on_a_really_offline_machine(cli, tmp_path):
    from medfm.backbones.weights import _reachable

    if _reachable("https://huggingface.co") is None:
        pytest.skip("this machine can reach huggingface.co; the real offline path cannot be exercised")
    env = {"HF_HUB_CACHE": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")}
    line = cli.error("extract", "--backbone", "deit_b", "--dataset", "busi", env=env)
    assert "looks offline" in line and "--weights" in line


def test_wrong_weights_file(cli, dinov2_s_weights, data_root):
    line = cli.error("extract", "--backbone", "resnet152", "--weights", dinov2_s_weights, "--dataset", "breastmnist",
                     "--data-root", data_root)
    assert "does not fit backbone 'resnet152'" in line


def test_bad_config_value_names_the_key(cli, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("extract:\n  backbone: resnet50\n  dataset: busi\n  batch_size: zero\n")
    line = cli.error("extract", "--config", cfg)
    assert "batch_size" in line and str(cfg) in line


def test_finetune_bad_unfreeze_names_the_key(cli):
    line = cli.error("finetune", "--backbone", "dinov2_vits14", "--dataset", "pneumoniamnist", "--unfreeze", "-3")
    assert "unfreeze" in line and ">= 0" in line
