"""Issue 17's "does the cache change the frozen result?" table, as one rerunnable command.

For every backbone x dataset pair it runs the ``mansoori2025`` preset's frozen linear row three ways
into one results store, then ``medfm report`` and prints the README table:

* ``crop``   — fast fidelity, medfm's preprocessing (shorter-side resize + centre crop, backbone mean/std);
* ``squash`` — fast fidelity with study 1's preprocessing on cached features
  (``--resize squash --norm dataset``);
* ``exact``  — the study code's 100 online epochs (``--fidelity exact``).

Everything goes through the real CLI (``python -m medfm sweep``), one subprocess per row, so a killed
run resumes where it stopped: finished rows are skipped by the sweep, an interrupted fine-tune resumes
from its ``last.pt``. Pairs run ``--jobs`` at a time with the CPU threads split between them (two
1-thread jobs use a 2-core machine better than one 2-thread job). On a GPU the sweep uses it.

    python benchmarks/exact_vs_fast.py --store /tmp/x17 \
        --backbones mobilenetv2,efficientnet_lite0 --datasets busi,breastmnist --jobs 2
    python benchmarks/exact_vs_fast.py --store /tmp/x17 --table-only     # report + table of what is there

Cost on a 2-core CPU, one 1-thread job each (measured: see the README's "Exact vs fast"): an exact
row of MobileNetV2 / EfficientNet-Lite0 takes 20–60 min on BreastMNIST, BUSI or the HAM10000 subset;
DINOv2-S about 2 min per epoch on BreastMNIST (over 3 h per row).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import time
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = {
    "crop": ["--fidelity", "fast"],
    "squash": ["--fidelity", "fast", "--resize", "squash", "--norm", "dataset"],
    "exact": ["--fidelity", "exact"],
}
PREPROCESSING = {  # exact_vs_fast.csv's "fast preprocessing" (resize policy, norm) -> the README's wording
    ("crop", "backbone"): "medfm's: crop + backbone mean/std",
    ("squash", "dataset"): "study 1's: squash 256 + dataset mean/std",
}
STOP = threading.Event()  # set on Ctrl-C: no pair starts another row (a rerun resumes)
COLUMNS = ("dataset", "metric", "backbone", "fast preprocessing", "fast value", "exact value", "exact − fast",
           "95% CI", "p", "p (Holm)")


def medfm(args: list[str], env: dict, log) -> int:
    cmd = [sys.executable, "-m", "medfm", *args]
    log.write(f"\n$ {' '.join(cmd)}\n")
    log.flush()
    return subprocess.run(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT).returncode


def run_pair(backbone: str, dataset: str, args, env: dict) -> tuple[str, str, list[str]]:
    """The pair's rows, in order; a failed row is reported and the pair's later rows still run, unless the
    run was interrupted (Ctrl-C reaches the child sweeps too; then no further row starts)."""
    rows = ["--preset", "mansoori2025", "--scenarios", "frozen", "--heads", "linear", "--seeds", args.seeds,
            "--backbones", backbone, "--datasets", dataset]
    for w in args.weights:
        rows += ["--weights", w]
    failed = []
    with open(args.store / "logs" / f"{dataset}-{backbone}.log", "a") as log:
        for mode in args.modes:
            if STOP.is_set():
                break
            t0 = time.perf_counter()
            rc = medfm(["sweep", *rows, *MODES[mode]], env, log)
            took = time.perf_counter() - t0
            print(f"{dataset} {backbone} {mode}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {took / 60:.1f} min",
                  flush=True)
            if rc:
                failed.append(mode)
    return backbone, dataset, failed


def table(csv_path: Path) -> str:
    """The README's Markdown rows from ``medfm report``'s exact_vs_fast.csv."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    with open(csv_path, newline="") as f:
        for r in sorted(csv.DictReader(f), key=lambda r: (r["dataset"], r["backbone"], r["fast preprocessing"])):
            r = {**r, "fast preprocessing": _wording(r["fast preprocessing"])}
            lines.append("| " + " | ".join(r[c] for c in COLUMNS) + " |")
    return "\n".join(lines)


def _wording(preprocessing: str) -> str:
    """``squash256, norm=dataset`` -> study 1's wording; a combination the README has no words for stays as is."""
    resize, _, norm = preprocessing.partition(", norm=")
    policy = re.match(r"[a-z]*", resize).group()
    return PREPROCESSING.get((policy, norm), preprocessing)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path, required=True, help="folder for the results store, caches, logs, report")
    ap.add_argument("--backbones", default="mobilenetv2,efficientnet_lite0,dinov2_vits14")
    ap.add_argument("--datasets", default="breastmnist,busi,kermany_cxr_224,ham10000_224")
    ap.add_argument("--modes", default="crop,squash,exact", help="which of crop, squash, exact to run per pair")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--weights", action="append", default=[],
                    help="NAME=PATH passed to every sweep (default: DINOv2-S from $MEDFM_WEIGHTS or ../shared/weights)")
    ap.add_argument("--jobs", type=int, default=2, help="pairs run at once; CPU threads are split between them")
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--table-only", action="store_true", help="skip the runs: report and print what the store holds")
    args = ap.parse_args()
    args.modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        ap.error(f"--modes: unknown {', '.join(unknown)}; choose from {', '.join(MODES)}")
    if not any(w.startswith("dinov2_vits14=") for w in args.weights):
        weights_dir = Path(os.environ.get("MEDFM_WEIGHTS", REPO.parent / "shared" / "weights"))
        dino = weights_dir / "dinov2_vits14_imgfocus_timm.safetensors"
        if dino.exists():
            args.weights.append(f"dinov2_vits14={dino}")
    args.store = args.store.resolve()
    (args.store / "logs").mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // max(1, args.jobs))
    env = {**os.environ, "MEDFM_RUNS": str(args.store / "runs"), "MEDFM_CACHE": str(args.store / "cache"),
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    env.setdefault("MEDFM_DATA", str(REPO.parent / "shared" / "data"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)

    failed = []
    if not args.table_only:
        pairs = [(b, d) for d in args.datasets.split(",") for b in args.backbones.split(",")]
        print(f"{len(pairs)} pairs x {len(args.modes)} rows, {args.jobs} at a time, {threads} thread(s) each; "
              f"logs in {args.store / 'logs'}", flush=True)
        pool = ThreadPoolExecutor(max_workers=args.jobs)
        try:
            for b, d, bad in pool.map(lambda p: run_pair(*p, args, env), pairs):
                failed += [f"{d} {b} {m}" for m in bad]
        except KeyboardInterrupt:
            STOP.set()  # before waiting: the running sweeps got the Ctrl-C themselves; no pair starts another row
            pool.shutdown(wait=True, cancel_futures=True)
            print("interrupted: rerun the same command to resume (finished rows are kept)", flush=True)
            return 130
        pool.shutdown()
    out = args.store / "report"
    with open(args.store / "logs" / "report.log", "a") as log:
        rc = medfm(["report", "--bootstrap", str(args.bootstrap), "--out", str(out)], env, log)
    if rc or not (out / "exact_vs_fast.csv").exists():
        why = "the store holds no row run both ways yet" if rc == 0 else f"medfm report failed (exit {rc})"
        print(f"no exact_vs_fast.csv: {why}; see {args.store / 'logs'}")
        return 1
    print(table(out / "exact_vs_fast.csv"))
    if failed:
        print("failed rows (see their logs): " + "; ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
