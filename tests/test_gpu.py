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
