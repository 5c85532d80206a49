"""Extraction throughput: medfm's real pipeline vs a naive one-image-at-a-time loop, same run.

The pipeline is ``medfm extract`` itself (batched DataLoader with decoding workers,
``inference_mode``, chunked Zarr writes; model build included in its time). The naive loop
decodes, preprocesses and runs each image alone. Both see the same images of the same dataset in
the same process, so the ratio is meaningful even on a noisy machine. Speed does not depend on
the weights' values, so random init is used unless --weights is given.

    python benchmarks/bench_extract.py [--backbone dinov2_vits14] [--dataset breastmnist] [--img-size 112]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from medfm.backbones import create_backbone
from medfm.config import ExtractConfig
from medfm.data import create_dataset
from medfm.extract import run_extract


def naive(backbone, dataset, device) -> tuple[int, float]:
    n, start = 0, time.perf_counter()
    with torch.inference_mode():
        for split in dataset.splits.values():
            for i in range(len(split)):
                x = backbone.transform(split.images.load(i)).unsqueeze(0).to(device)
                backbone.embed(x)
                n += 1
    return n, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="dinov2_vits14")
    ap.add_argument("--dataset", default="breastmnist")
    ap.add_argument("--img-size", type=int, default=112)
    ap.add_argument("--weights", default="random")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{args.backbone} @ {args.img_size} px on {args.dataset}, device: {name}")

    with tempfile.TemporaryDirectory() as tmp:
        cfg = ExtractConfig(backbone=args.backbone, dataset=args.dataset, weights=args.weights,
                            img_size=args.img_size, batch_size=args.batch_size, device=str(device),
                            cache=str(Path(tmp) / "bench.zarr"))
        result = run_extract(cfg)
    pipe_rate = result.extracted / result.seconds

    backbone = create_backbone(args.backbone, weights=args.weights, img_size=args.img_size, device=device)
    n, seconds = naive(backbone, create_dataset(args.dataset), device)
    naive_rate = n / seconds

    print(f"{'pipeline (medfm extract, build + writes included)':52s} {pipe_rate:8.1f} img/s  ({result.extracted} images)")
    print(f"{'naive loop (one image at a time)':52s} {naive_rate:8.1f} img/s  ({n} images)")
    print(f"ratio pipeline / naive: {pipe_rate / naive_rate:.2f}x")


if __name__ == "__main__":
    main()
