"""GPU-only: bf16 extraction on CUDA agrees with fp32 on CPU. Skipped cleanly without a GPU."""

import numpy as np
import pytest

from medfm.cache import FeatureCache
from medfm.config import ExtractConfig
from medfm.extract import run_extract

pytestmark = pytest.mark.gpu


def test_bf16_cuda_features_match_cpu_fp32(tmp_path, data_root):
    common = dict(backbone="dinov2_vits14", dataset="breastmnist", weights="random", img_size=112,
                  data_root=str(data_root), dtype="float32")
    cpu = run_extract(ExtractConfig(**common, device="cpu", cache=str(tmp_path / "cpu.zarr")))
    gpu = run_extract(ExtractConfig(**common, device="cuda", cache=str(tmp_path / "gpu.zarr")))
    a, b = FeatureCache(cpu.cache).features("test"), FeatureCache(gpu.cache).features("test")
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() > 0.99, cos.min()


def test_fp16_finetune_on_cuda_trains_with_a_loss_scaler(tmp_path, data_root):
    """amp_dtype=fp16 (study 1's exact rows): trains on CUDA with a GradScaler whose state the checkpoint keeps."""
    import torch

    from medfm.finetune import FinetuneConfig, run_finetune

    rec = run_finetune(FinetuneConfig(backbone="mobilenetv2", weights="random", dataset="breastmnist",
                                      data_root=str(data_root), img_size=64, unfreeze=1, epochs=2, batch_size=32,
                                      fraction=0.25, device="cuda", amp=True, amp_dtype="fp16", num_workers=0,
                                      out=str(tmp_path / "fp16"), results=str(tmp_path / "results.sqlite")))
    saved = torch.load(tmp_path / "fp16" / "last.pt", weights_only=False)
    assert saved["scaler"] and saved["scaler"]["scale"] > 0
    assert rec["hyperparameters"]["precision"] == "fp16" and np.isfinite(rec["val"]["roc_auc"])
    assert all(np.isfinite(h["train_loss"]) for h in rec["history"])
