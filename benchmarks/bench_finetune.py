"""Fine-tuning speed and memory: bf16 autocast vs fp32, gradient checkpointing on vs off, same process.

Each setting runs medfm's own fine-tune model (``FinetuneModel``: backbone with the last
``--unfreeze`` blocks trainable + linear head, AdamW over ``param_groups``) for ``--steps`` timed
training steps on in-memory batches (data loading is excluded, so the numbers are the model's).
It prints images/s and peak GPU memory per setting, and ratios against fp32 without
checkpointing measured in the same process. Speed does not depend on the weights' values, so
random init is used unless --weights is given. Needs a CUDA GPU.

    python benchmarks/bench_finetune.py [--backbone dinov2_vitb14] [--img-size 224] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


def run(args, amp: bool, ckpt: bool, device: torch.device) -> tuple[float, float]:
    from medfm.backbones import create_backbone
    from medfm.finetune.engine import autocast
    from medfm.finetune.model import FinetuneModel, param_groups

    backbone = create_backbone(args.backbone, weights=args.weights, img_size=args.img_size)
    n = len(backbone.blocks()) if args.unfreeze == "all" else int(args.unfreeze)
    with torch.no_grad():
        dim = backbone.embed(torch.zeros(1, 3, args.img_size, args.img_size))[0].shape[-1]
    model = FinetuneModel(backbone, torch.nn.Linear(dim, 2), "pooled", n).to(device).train()
    if ckpt:
        backbone.net.set_grad_checkpointing(True)
    opt = torch.optim.AdamW(param_groups(model, 1e-4, 1e-3, 0.05, 0.75))
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=device)
    y = torch.randint(0, 2, (args.batch_size,), device=device)

    cuda = device.type == "cuda"
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
        with autocast(device, amp):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    return args.steps * args.batch_size / seconds, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="dinov2_vitb14")
    ap.add_argument("--weights", default="random")
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--unfreeze", default="all")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_finetune.py needs a CUDA GPU (bf16 autocast and GPU memory are what it measures); "
                 "none is visible, so nothing was measured")
    print(f"{args.backbone} @ {args.img_size} px, batch {args.batch_size}, unfreeze {args.unfreeze}, "
          f"device: {torch.cuda.get_device_name()}")
    rows = []
    for amp, ckpt in ((False, False), (True, False), (False, True), (True, True)):
        rate, peak = run(args, amp, ckpt, torch.device("cuda"))
        torch.cuda.empty_cache()
        rows.append((("bf16" if amp else "fp32") + (" + grad ckpt" if ckpt else ""), rate, peak))
    base_rate, base_peak = rows[0][1], rows[0][2]
    print(f"{'setting':<20} {'img/s':>9} {'peak GiB':>9} {'speed x':>8} {'memory x':>9}")
    for name, rate, peak in rows:
        print(f"{name:<20} {rate:9.1f} {peak:9.2f} {rate / base_rate:8.2f} {peak / base_peak:9.2f}")


if __name__ == "__main__":
    main()
