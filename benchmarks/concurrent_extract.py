"""Issue 12 acceptance: two concurrent ``medfm extract`` runs on one cache path, same or different request.

Each round starts two real ``medfm extract`` processes on a fresh ``--cache`` path at the same
moment: even rounds the same request twice, odd rounds two different requests (MobileNetV2 with
ImageNet weights vs DINOv2-S with its weights; every other odd round DINOv2 starts 3 s ahead, so
either request can win). Every process must exit 0 or exit 2 with exactly
one ``medfm: error:`` line (no traceback); the store left behind must be complete, verify chunk by
chunk, and hold features byte-identical to a single uninterrupted run of the request its metadata
names. Not part of the default test suite (minutes); run it by hand:

    python benchmarks/concurrent_extract.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from medfm.cache import FeatureCache  # noqa: E402
from medfm.paths import find_data_root, find_weights_root  # noqa: E402


def manifest(root: Path, per_split=(("train", 32), ("val", 16), ("test", 16))) -> Path:
    """A small real dataset: the first PneumoniaMNIST images of each split, as PNGs and a CSV manifest."""
    from PIL import Image

    npz = np.load(find_data_root() / "pneumoniamnist.npz")
    rows = ["path,label,split"]
    for split, n in per_split:
        (root / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(npz[f"{split}_images"][i]).save(root / split / f"{i}.png")
            rows.append(f"{split}/{i}.png,{('normal', 'pneumonia')[int(npz[f'{split}_labels'][i, 0])]},{split}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


def requests(data: Path) -> dict[str, list[str]]:
    from medfm.backbones import BACKBONES

    mobilenet = BACKBONES.get("mobilenetv2").offline_copies[0].locate()
    dinov2 = find_weights_root() / "dinov2_vits14_imgfocus_timm.safetensors"
    common = ["--dataset", str(data), "--batch-size", "8", "--chunk-rows", "8", "--num-workers", "0", "--pixels", "none"]
    return {"mobilenetv2": ["--backbone", "mobilenetv2", "--weights", str(mobilenet), "--img-size", "32", *common],
            "dinov2_vits14": ["--backbone", "dinov2_vits14", "--weights", str(dinov2), "--img-size", "56", *common]}


def start(args: list[str], cache: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "medfm", "extract", *args, "--cache", str(cache), "--json"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def outcome(proc: subprocess.Popen) -> tuple[str, str]:
    out, err = proc.communicate(timeout=900)
    errors = [ln for ln in err.splitlines() if ln.startswith("medfm: error:")]
    if proc.returncode == 0:
        rec = json.loads(out)
        return ("reused" if rec["reused"] else f"wrote {rec['extracted']}"), ""
    ok = proc.returncode == 2 and len(errors) == 1 and "Traceback" not in err
    return ("refused" if ok else f"BAD exit {proc.returncode}"), (errors[0] if errors else err[-2000:])


def check_store(path: Path, refs: dict[str, Path]) -> str:
    cache = FeatureCache(path)  # complete, this format version, metadata whole
    if cache.problems():
        return "FAIL: chunks do not verify"
    ref = FeatureCache(refs[cache.meta["backbone"]["name"]])
    for s in ref.splits:
        if not np.array_equal(cache.features(s), ref.features(s)) or cache.ids(s) != ref.ids(s):
            return f"FAIL: {s} features differ from a single run of {cache.meta['backbone']['name']}"
    return f"ok ({cache.meta['backbone']['name']})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "200"}
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env["MEDFM_CACHE"] = str(tmp / "cache")
        reqs = requests(manifest(tmp / "data"))
        refs = {}
        for name, req in reqs.items():  # one uninterrupted single run per request
            refs[name] = tmp / f"ref-{name}.zarr"
            kind, line = outcome(start(req, refs[name], env))
            assert kind.startswith("wrote"), line
        print(f"{'round':>5} {'requests':<30} {'process 1':<12} {'process 2':<12} store")
        t0 = time.perf_counter()
        for r in range(args.rounds):
            pair = [("mobilenetv2", "mobilenetv2"), ("mobilenetv2", "dinov2_vits14"), ("mobilenetv2", "mobilenetv2"),
                    ("dinov2_vits14", "mobilenetv2")][r % 4]
            path = tmp / f"round{r}.zarr"
            procs = []
            for k, name in enumerate(pair):  # rounds 3, 7, ...: DINOv2 (slower to start) gets a head start
                if k and r % 4 == 3:
                    time.sleep(3)
                procs.append(start(reqs[name], path, env))
            results = [outcome(p) for p in procs]
            verdict = check_store(path, refs) if path.exists() else "FAIL: no store"
            bad = verdict.startswith("FAIL") or any(k.startswith("BAD") for k, _ in results)
            failures += bad
            print(f"{r:>5} {' + '.join(pair):<30} {results[0][0]:<12} {results[1][0]:<12} {verdict}")
            for kind, line in results:
                if kind == "refused" and r < 2 or kind.startswith("BAD"):
                    print(f"      {line}")
    print(f"{args.rounds} rounds in {time.perf_counter() - t0:.0f} s: {failures} failed -> {'PASS' if not failures else 'FAIL'}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
