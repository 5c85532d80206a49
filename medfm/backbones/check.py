"""``medfm backbones --check NAME``: build one backbone and run one forward pass, report what came out."""

from __future__ import annotations

import time

import torch

from medfm.backbones import create_backbone
from medfm.errors import MedfmError


def check_backbone(name: str, weights: str | None = None, img_size: int | None = None, feature: str | None = None,
                   layers: int | None = None, device: str = "cpu", backbones_file: str | None = None) -> dict:
    if img_size is not None:  # refused before building or allocating anything
        from medfm.config import MAX_IMG_SIZE, check_input_memory

        if not 16 <= img_size <= MAX_IMG_SIZE:
            raise MedfmError(f"--img-size {img_size} is outside 16..{MAX_IMG_SIZE}", "give a size the backbone can take, e.g. 224")
        check_input_memory(2, img_size)
    t0 = time.perf_counter()
    bb = create_backbone(name, weights, img_size, feature, device=device, layers=layers, backbones_file=backbones_file)
    built = time.perf_counter() - t0
    size = bb.spec.img_size
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    t1 = time.perf_counter()
    with torch.inference_mode():
        pooled, tokens = bb.embed(x, with_tokens=True)
    return {
        "name": name,
        "weights": bb.spec.weights.origin,
        "sha256": bb.spec.weights.sha256,
        "img_size": size,
        "feature": bb.spec.feature,
        "layers": bb.spec.layers,
        "params_m": round(sum(p.numel() for p in bb.net.parameters()) / 1e6, 2),
        "feature_dim": int(pooled.shape[1]),
        "token_shape": list(tokens.shape[1:]),
        "blocks": len(bb.blocks()),
        "finite": bool(torch.isfinite(pooled).all()),
        "build_s": round(built, 2),
        "forward_s": round(time.perf_counter() - t1, 2),
    }
