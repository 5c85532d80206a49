"""``medfm sweep``: plan a backbones x datasets x heads x label budgets x seeds grid and run it.

Two scenarios (a study's "frozen" and "unfrozen" rows):

- **frozen**: each (backbone, dataset) is extracted once (``run_extract``: a finished cache is
  reused, an unfinished one resumed); every probe then runs off that cache.
- **unfrozen**: one ``run_finetune`` per (dataset, backbone, head, label budget, seed, unfreeze depth),
  each in its own deterministic run folder under the sweep's ``out``, so a killed fine-tune resumes
  from its last checkpoint when the sweep is rerun.

Fidelity (``medfm.fidelity``): ``fast`` is the path above; ``exact`` (a preset with study code) plans every
row as a fine-tune with the study code's settings (frozen rows, and study 1's DeiT-head rows, with
``unfreeze=0``), and every row's record gets the fidelity it ran and its departures with code locations.

Every row has a results-store key computed before any model is built (``probe_run_key`` /
``finetune_run_key``, the same functions the stages store under); a row whose key is already
present is skipped. A killed sweep is therefore simply rerun: rows stored before the kill stay as
they are, nothing is duplicated, the rest are computed.
"""

from __future__ import annotations

import json
import itertools
import re
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError
from rich.markup import escape

from medfm.config import ExtractConfig, ProbeConfig, SweepConfig
from medfm.errors import MedfmError
from medfm.fidelity import STUDIES, Row, base_name, missing_options, record_entry
from medfm.finetune import FinetuneConfig
from medfm.paths import runs_root
from medfm.presets import PRESETS
from medfm.heads import heads_for, needs_tokens
from medfm.registry import Registry
from medfm.results import ResultsStore, complete_run
from medfm.ui import console, progress


@dataclass(frozen=True)
class Scenario:
    kind: str  # results-store kind of its rows
    heads: Registry  # the heads that can run in it
    depth_axis: str | None = None  # grid axis that multiplies its rows (the unfreeze depths)


SCENARIOS = {"frozen": Scenario("probe", heads_for("probe")), "unfrozen": Scenario("finetune", heads_for("finetune"), "unfreeze")}
PREPROCESS_KEYS = ("resize", "resize_size", "norm")  # a preset's `preprocess`, or the sweep's own options
# FinetuneConfig keys the sweep sets per row or from its own options (a `finetune:` mapping may not set them)
SWEEP_OWNED = ("backbone", "dataset", "head", "fraction", "seed", "unfreeze", "weights", "data_root", "img_size", "device",
               "out", "results", "resume", "overwrite", "grey", "backbones_file", *PREPROCESS_KEYS)


@dataclass(frozen=True)
class Job:
    backbone: str
    dataset: str
    head: str
    fraction: float
    seed: int
    scenario: str = "frozen"
    unfreeze: int | str | None = None  # unfrozen rows: last N blocks trained
    fidelity: str = "fast"  # exact: a fine-tune with the study code's settings, whatever the scenario

    @property
    def kind(self) -> str:
        return "finetune" if self.fidelity == "exact" else SCENARIOS[self.scenario].kind

    @property
    def label(self) -> str:
        depth = f" u{self.unfreeze}" if self.unfreeze is not None else ""
        exact = f" [exact {self.scenario}]" if self.fidelity == "exact" else ""
        return f"{self.dataset}/{self.backbone}/{self.head}{depth} f={self.fraction:g} seed={self.seed}{exact}"

    def row(self) -> Row:
        """The row as the fidelity tables see it (the dataset's base name, no protocol)."""
        return Row(self.backbone, base_name(self.dataset), self.head, self.scenario, self.unfreeze)

    def folder(self, out_root: Path, key: str = "") -> Path:
        """The row's run folder, a function of the row and its run key: a rerun finds a killed fine-tune's
        checkpoints, or a finished run whose row is missing, there; a row with other settings (another image
        size, weights, probe settings) gets a folder of its own, so no run's results.json is replaced."""
        name = f"{self.head}-f{self.fraction:g}-s{self.seed}-{key[:10]}"
        if self.unfreeze is not None:
            name = f"finetune-u{self.unfreeze}-{name}"
        return out_root / _safe(self.dataset) / _safe(self.backbone) / name


def _safe(name: str) -> str:
    """A folder name for a dataset given by name, name with options, or path."""
    return re.sub(r"[^\w.+-]+", "_", name).strip("_") or "dataset"


def resolve_grid(cfg: SweepConfig) -> dict:
    """The grid to run: a preset's lists, overridden by any list given explicitly."""
    preset = PRESETS.get(cfg.preset) if cfg.preset else None

    def pick(mine, field, default):
        return list(mine) or list(getattr(preset, field, ()) if preset else ()) or list(default)

    fidelity = cfg.fidelity or (preset.fidelity if preset else "fast")
    code = STUDIES[preset.code] if preset and preset.code else None
    if fidelity == "exact" and code is None:
        raise MedfmError("--fidelity exact follows a study's code, and " + (f"preset {preset.name} has none"
                         if preset else "this sweep names no preset"),
                         "pass --preset mansoori2025, huix2024 or huang2024 (or --fidelity fast)")
    grid = {
        "fidelity": fidelity,
        "code": code.name if code else None,
        "backbones": pick(cfg.backbones, "backbones", ()),
        "datasets": pick(cfg.datasets, "datasets", ()),
        "heads": pick(cfg.heads, "heads", ("linear",)),
        "fractions": pick(cfg.fractions, "fractions", (1.0,)),
        "seeds": pick(cfg.seeds, "seeds", (0,)),
        "img_size": cfg.img_size or (preset.img_size if preset else None),
        "probe": {**(preset.probe if preset else {}), **cfg.probe},
        "scenarios": pick(cfg.scenarios, "scenarios", ("frozen",)),
        "unfreeze": pick(cfg.unfreeze, "unfreeze", ("all",)),
        "finetune": {**(preset.finetune if preset else {}), **cfg.finetune},
        "preprocess": {**(preset.preprocess if preset else {}),
                       **{k: getattr(cfg, k) for k in PREPROCESS_KEYS if getattr(cfg, k) is not None}},
    }
    if fidelity == "exact":  # the code's models and data lists (e.g. open_clip laion2b CLIP, study 1's DDSM lists)
        grid["backbones"] = list(dict.fromkeys(code.backbone_for(b) for b in grid["backbones"]))
        grid["datasets"] = list(dict.fromkeys(code.dataset_for(d) for d in grid["datasets"]))
    sizes = grid["img_size"]
    if isinstance(sizes, dict) and set(sizes) - set(grid["backbones"]):
        extra = sorted(set(sizes) - set(grid["backbones"]))[0]
        raise MedfmError(f"--img-size names {extra}, which is not one of the sweep's backbones ({', '.join(grid['backbones'])})",
                         "give sizes for the sweep's backbones, e.g. --img-size dinov2_vits14=56,mobilenetv2=64")
    for key in ("backbones", "datasets"):
        if not grid[key]:
            raise MedfmError(f"the sweep has no {key}", f"pass --{key} a,b or --preset NAME (`medfm sweep --list-presets`)")
    for s in grid["scenarios"]:
        if s not in SCENARIOS:
            raise MedfmError(f"unknown scenario {s!r}", f"use {' and/or '.join(SCENARIOS)}, e.g. --scenarios frozen,unfrozen")
    for h in grid["heads"]:  # a head one scenario cannot run is a note in the plan (plan_jobs), a typo is an error
        if not any(h in sc.heads for sc in SCENARIOS.values()):
            SCENARIOS[grid["scenarios"][0]].heads.get(h)  # the registry's "unknown head ... did you mean" error
    bad = [f for f in grid["fractions"] if not 0 < f <= 1]
    if bad:
        raise MedfmError(f"label fraction {bad[0]} is out of range", "use fractions in (0, 1], e.g. --fractions 0.01,0.1,1.0")
    if "unfrozen" in grid["scenarios"] or fidelity == "exact":
        grid["finetune"] = _check_finetune(grid)
    return grid


def _check_finetune(grid: dict) -> dict:
    """Refuse bad fine-tune settings before anything runs (not after the first hour of probes); the
    settings parsed (``--finetune epochs=10`` gives the int 10)."""
    owned = sorted(set(grid["finetune"]) & set(SWEEP_OWNED))
    if owned:
        raise MedfmError(f"the sweep's finetune settings may not set {', '.join(owned)} (the sweep sets them per row)",
                         "use the sweep's own options: --unfreeze, --heads, --fractions, --seeds, --weights, --img-size, ...")
    for depth in grid["unfreeze"]:
        try:
            parsed = FinetuneConfig(**{**grid["finetune"], "backbone": "-", "dataset": "-", "unfreeze": depth})
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise MedfmError(f"invalid fine-tune setting {where}: {err['msg']}",
                             "see `medfm finetune --help` for the keys of the sweep's finetune settings") from None
    return {k: getattr(parsed, k) for k in grid["finetune"]}


def plan_jobs(grid: dict) -> tuple[list[Job], list[str]]:
    """Every row, grouped by (dataset, backbone); and a note per head a scenario cannot run."""
    jobs, notes = [], []
    exact = grid.get("fidelity") == "exact"
    for s in grid["scenarios"]:
        sc = SCENARIOS["unfrozen" if exact else s]  # exact: every row runs through the fine-tune path
        for h in grid["heads"]:
            if h not in sc.heads:
                notes.append(f"head {h} has no {s} rows ({s} heads: {', '.join(sc.heads)})")
    for d, b in itertools.product(grid["datasets"], grid["backbones"]):
        for s in grid["scenarios"]:
            sc = SCENARIOS["unfrozen" if exact else s]
            depths = grid[SCENARIOS[s].depth_axis] if SCENARIOS[s].depth_axis else [None]
            for h, u, f, seed in itertools.product(grid["heads"], depths, grid["fractions"], grid["seeds"]):
                if h not in sc.heads:
                    continue
                if exact:  # the depth the code really trains (frozen: 0; study 1's DeiT-head rows: 0), and the
                    # head it really trains (study 3's DINOv2: an MLP on the _lc logits), so plans and labels say so
                    code = STUDIES[grid["code"]]
                    u = code.unfreeze_rule(Row(b, base_name(d), h, s, u))
                    h = code.row_settings(Row(b, base_name(d), h, s, u)).get("head", h)
                jobs.append(Job(b, d, h, float(f), int(seed), s, u, "exact" if exact else "fast"))
    return jobs, notes


def _unfreeze_values(jobs: list[Job]) -> list[str]:
    """The depths the planned fine-tune rows train (exact frozen rows: 0), in plan order."""
    return list(dict.fromkeys(str(j.unfreeze) for j in jobs if j.kind == "finetune"))


def exact_settings(grid: dict, job: Job) -> dict:
    """The FinetuneConfig keys of an exact row: the study code's table for the row, then the sweep's own
    ``--finetune`` settings (recorded as overrides: they are no longer the code's)."""
    settings = STUDIES[grid["code"]].row_settings(job.row())
    settings.pop("dataset", None)  # the job's dataset is already the code's (resolve_grid)
    return settings


def fidelity_entry(grid: dict, job: Job, cfg: SweepConfig) -> dict:
    """The ``fidelity`` part of a row's record: the mode, the code followed, the departures (with code locations)."""
    code = STUDIES[grid["code"]] if grid.get("code") else None
    overrides = user_overrides(cfg, grid, job) if job.fidelity == "exact" else None
    return record_entry(job.fidelity, code, job.row() if code else None, overrides)


def user_overrides(cfg: SweepConfig, grid: dict, job: Job) -> dict:
    """What the user set over an exact row's code settings: ``--finetune`` keys, ``--weights`` for its backbone,
    ``--img-size`` (recorded in the row's fidelity entry: those settings are no longer the code's)."""
    mine = {k: grid["finetune"][k] for k in cfg.finetune}
    if job.backbone in cfg.weights:
        mine["weights"] = cfg.weights[job.backbone]
    if cfg.img_size and img_size_for(grid, job.backbone) is not None:
        mine["img_size"] = img_size_for(grid, job.backbone)
    for key in ("resize", "resize_size", "norm"):  # the sweep's own preprocessing options (issue 15/17), when set
        if getattr(cfg, key, None) is not None:
            mine[key] = getattr(cfg, key)
    return mine


def img_size_for(grid: dict, backbone: str) -> int | None:
    """The row's input size: the sweep's one size, the backbone's entry in a per-backbone mapping, or None
    (the backbone's default)."""
    sizes = grid["img_size"]
    return sizes.get(backbone) if isinstance(sizes, dict) else sizes


def check_rows(cfg: SweepConfig, grid: dict, jobs: list[Job], tokens: bool) -> dict[tuple[str, str], MedfmError]:
    """Every (dataset, backbone) pair of the plan checked before any model is built: the backbone is known, its
    weights resolve, its input size suits it (patch-size multiple, CNN minimum), the dataset is present and
    readable, the grey mode suits its images, its heads get what they read, fine-tunes find a val split.
    The problems, by pair (a pair's problem fails all its rows)."""
    from medfm.backbones import check_grey_mode, resolve_backbone
    from medfm.data import create_dataset

    datasets, backbones, problems = {}, {}, {}

    def attempt(cache: dict, key, fn):
        if key not in cache:
            try:
                cache[key] = fn()
            except MedfmError as exc:
                cache[key] = exc
        return cache[key]

    for d, b in dict.fromkeys((j.dataset, j.backbone) for j in jobs):
        ds = attempt(datasets, d, lambda: create_dataset(d, cfg.data_root, check_images=False))
        # --plan downloads nothing: official weights are then checked as far as random init (size, feature, ...)
        weights = cfg.weights.get(b) or ("random" if cfg.plan_only else None)
        resize = {k: v for k, v in grid["preprocess"].items() if k != "norm"}
        spec = attempt(backbones, b, lambda: resolve_backbone(b, weights, img_size_for(grid, b), grey=cfg.grey,
                                                               backbones_file=cfg.backbones_file, **resize))
        pair = [j for j in jobs if (j.dataset, j.backbone) == (d, b)]
        try:
            for found in (spec, ds):
                if isinstance(found, MedfmError):
                    raise found
            check_grey_mode(cfg.grey, ds)
            if any(j.kind == "probe" for j in pair) and not tokens and needs_tokens([j.head for j in pair if j.kind == "probe"]):
                raise MedfmError("a probe head of this sweep reads patch tokens, and --no-tokens stores none", "drop --no-tokens")
            if any(j.kind == "finetune" for j in pair) and not len(ds.splits.get("val", ())):
                raise MedfmError(f"dataset {ds.name} has no val split to choose a fine-tune's best epoch on",
                                 "give it a val split, or run the frozen scenario only")
        except MedfmError as exc:
            problems[(d, b)] = exc
    return problems


def _plan_exact(cfg: SweepConfig, grid: dict, jobs: list[Job], summary: dict) -> list[str]:
    """Print which fidelity the sweep runs; for exact rows put each row's settings in the plan and return the
    options they need that this medfm's FinetuneConfig lacks."""
    code = STUDIES[grid["code"]] if grid["code"] else None
    if grid["fidelity"] == "fast":
        console.print("fidelity: fast (medfm's cached path)" + (f"; --fidelity exact follows {code.source}" if code else ""))
        return []
    depths = ", ".join(dict.fromkeys(f"{j.scenario} {j.head} u{j.unfreeze}" for j in jobs))
    console.print(f"fidelity: exact, following {code.source}: every row a fine-tune ({depths})")
    for s in code.settings:
        console.print(escape(f"  {s.key}: {s.exact_text} (code: {', '.join(s.code[:3])})"))
    missing = set()
    for entry, job in zip(summary["plan"], jobs):
        entry["settings"] = exact_settings(grid, job)
        missing.update(missing_options(entry["settings"], FinetuneConfig))
    summary["missing_options"] = sorted(missing)
    if missing:
        console.print(f"  [yellow]not in this medfm yet[/]: {', '.join(sorted(missing))}")
    return sorted(missing)


def _counts(jobs: list[Job], kind: str) -> dict:
    return {"planned": sum(j.kind == kind for j in jobs), "ran": 0, "skipped": 0}


def run_sweep(cfg: SweepConfig) -> dict:
    grid = resolve_grid(cfg)
    jobs, notes = plan_jobs(grid)
    store = ResultsStore(cfg.results)
    name = cfg.preset or "sweep"
    out_root = Path(cfg.out) if cfg.out else runs_root() / "sweep" / name
    summary = {"preset": cfg.preset, "planned": len(jobs), "ran": 0, "skipped": 0,
               "probes": _counts(jobs, "probe"), "finetunes": _counts(jobs, "finetune"), "not_planned": notes,
               "results": str(store.path), "grid": {k: v for k, v in grid.items() if k not in ("probe", "finetune")},
               "finetune_settings": grid["finetune"], "plan": [j.__dict__ for j in jobs], "caches": {},
               "fidelity": grid["fidelity"], "study_code": STUDIES[grid["code"]].source if grid["code"] else None}
    missing = _plan_exact(cfg, grid, jobs, summary)
    probe_heads = [h for h in grid["heads"] if h in SCENARIOS["frozen"].heads] if "frozen" in grid["scenarios"] else []
    tokens = cfg.tokens if cfg.tokens is not None else needs_tokens(probe_heads)
    n_pairs = len(grid["datasets"]) * len(grid["backbones"])
    n_probe, n_ft = summary["probes"]["planned"], summary["finetunes"]["planned"]
    console.print(f"sweep plan: {len(grid['backbones'])} backbones x {len(grid['datasets'])} datasets x "
                  f"{len(grid['heads'])} heads x {len(grid['fractions'])} label budgets x {len(grid['seeds'])} seeds "
                  f"({', '.join(grid['scenarios'])}) = {n_probe} probes over {n_pairs if n_probe else 0} caches"
                  + (f" + {n_ft} fine-tunes (unfreeze {', '.join(_unfreeze_values(jobs))})" if n_ft else "")
                  + f" (results: {store.path})")
    if grid["preprocess"]:
        console.print("  preprocessing: " + ", ".join(f"{k}={v}" for k, v in grid["preprocess"].items()))
    for note in notes:
        console.print(f"  note: {note}")
    if missing and not cfg.plan_only:
        raise MedfmError(f"--fidelity exact needs the option(s) {', '.join(missing)}, which this medfm does not have yet",
                         "run --fidelity fast, or a medfm with issue 17's options (see `medfm sweep --plan`)")
    problems = check_rows(cfg, grid, jobs, tokens)
    bad = [j for j in jobs if (j.dataset, j.backbone) in problems]
    summary["failed"] = []
    for (d, b), exc in problems.items():
        console.print(f"  [yellow]cannot run[/] {d}/{b}: {exc}")
    if cfg.plan_only:
        summary["status"] = {f"{d}/{b}": str(problems.get((d, b), "ok"))
                             for d, b in itertools.product(grid["datasets"], grid["backbones"])}
        return summary
    if bad and not cfg.keep_going:
        first = problems[(bad[0].dataset, bad[0].backbone)]
        raise MedfmError(f"{len(bad)} of {len(jobs)} sweep rows cannot run, so none was run; first: {bad[0].label}: "
                         f"{first.problem}", (first.fix + "; or " if first.fix else "") +
                         "pass --keep-going to run the other rows and record these as failures")

    start = time.perf_counter()
    with progress() as bar:
        task = bar.add_task("sweep", total=len(jobs), rate="")

        done: set[Job] = set()

        def advance(job: Job, ran: bool) -> None:
            key = "ran" if ran else "skipped"
            summary[key] += 1
            summary["probes" if job.kind == "probe" else "finetunes"][key] += 1
            done.add(job)
            bar.update(task, advance=1, rate=f"{summary['ran']} run, {summary['skipped']} already done")

        def fail(rows: list[Job], exc: BaseException) -> None:
            """--keep-going: the rows not yet done are recorded as failed, with the error, and the sweep goes on."""
            if not cfg.keep_going:
                raise exc
            error = str(exc) if isinstance(exc, MedfmError) else f"{type(exc).__name__}: {exc}"
            for job in rows:
                if job not in done:
                    summary["failed"].append({"row": job.label, **job.__dict__, "error": error})
                    done.add(job)
                    bar.update(task, advance=1)
            console.print(f"  [red]failed[/] {rows[0].label}" + (f" (+{len(rows) - 1} rows)" if len(rows) > 1 else "")
                          + f": {error}")

        for (d, b), pair_jobs in itertools.groupby(jobs, key=lambda j: (j.dataset, j.backbone)):
            pair_jobs = list(pair_jobs)
            if (d, b) in problems:
                fail(pair_jobs, problems[(d, b)])
                continue
            probes = [j for j in pair_jobs if j.kind == "probe"]
            finetunes = [j for j in pair_jobs if j.kind == "finetune"]
            for rows, step in ((probes, _run_probes), (finetunes, _run_finetunes)):
                try:
                    if rows:
                        step(cfg, grid, rows, tokens, store, out_root, summary, advance, fail)
                except Exception as exc:  # --keep-going: any failure of a row is recorded, not only a MedfmError
                    fail(rows, exc)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    p, f = summary["probes"], summary["finetunes"]
    console.print(f"[green]sweep done[/]: {p['ran']} probes and {f['ran']} fine-tunes run, {p['skipped']} probes and "
                  f"{f['skipped']} fine-tunes already in {store.path}" +
                  (f"; [red]{len(summary['failed'])} rows failed[/]" if summary["failed"] else ""))
    for failure in summary["failed"]:
        console.print(f"  failed: {failure['row']}: {failure['error']}")
    return summary


def raise_for_failures(summary: dict) -> None:
    """The CLI's exit status for a --keep-going sweep with failures: one line, status 2."""
    failed = summary.get("failed") or []
    if failed:
        raise MedfmError(f"{len(failed)} of {summary['planned']} sweep rows failed (first: {failed[0]['row']}: "
                         f"{failed[0]['error']})", "fix them and rerun the sweep: the rows that ran are stored and skipped")


def _run_probes(cfg: SweepConfig, grid: dict, jobs: list[Job], tokens: bool, store: ResultsStore, out_root: Path,
                summary: dict, advance, fail) -> None:
    """One extraction for this (dataset, backbone), then every probe row off its cache, read once (``LoadedCache``)."""
    from medfm.extract import run_extract
    from medfm.probe.loaded import LoadedCache
    from medfm.probe.runner import probe_run_key, run_probe

    d, b = jobs[0].dataset, jobs[0].backbone
    ex = run_extract(ExtractConfig(backbone=b, dataset=d, weights=cfg.weights.get(b), data_root=cfg.data_root,
                                   img_size=img_size_for(grid, b), grey=cfg.grey, tokens=tokens,
                                   batch_size=cfg.extract_batch_size, device=cfg.device, duplicates=cfg.duplicates,
                                   backbones_file=cfg.backbones_file, **grid["preprocess"]))
    summary["caches"][f"{d}/{b}"] = str(ex.cache)
    cache = LoadedCache(ex.cache)

    def probe(row_cfg: ProbeConfig) -> dict:
        return run_probe(row_cfg, cache)

    for job in jobs:
        pcfg = ProbeConfig(**{**grid["probe"], "cache": str(ex.cache), "head": job.head, "fraction": job.fraction,
                              "seed": job.seed, "results": str(store.path), "device": cfg.device})
        try:
            key = probe_run_key(pcfg, cache)  # `out` is not part of the key
            pcfg = pcfg.model_copy(update={"out": str(job.folder(out_root, key))})
        except Exception as exc:
            fail([job], exc)
            continue
        _run_row(job, pcfg, key, "probe", probe, store, advance, fail, fidelity_entry(grid, job, cfg))


def _run_finetunes(cfg: SweepConfig, grid: dict, jobs: list[Job], tokens: bool, store: ResultsStore, out_root: Path,
                   summary: dict, advance, fail) -> None:
    """Every fine-tune row of this (dataset, backbone): skipped when stored, resumed when half done."""
    from medfm.finetune.runner import finetune_inputs, finetune_run_key, run_finetune

    from medfm.config import _BackboneDatasetConfig

    inputs = {}  # dataset + backbone spec, resolved once per distinct dataset/backbone settings (exact rows may differ)
    for job in jobs:
        fcfg = FinetuneConfig(**{**grid["finetune"], "backbone": job.backbone, "dataset": job.dataset,
                                 "weights": cfg.weights.get(job.backbone), "data_root": cfg.data_root, "grey": cfg.grey,
                                 "img_size": img_size_for(grid, job.backbone), "head": job.head, "unfreeze": job.unfreeze,
                                 "fraction": job.fraction, "seed": job.seed, "device": cfg.device, "duplicates": cfg.duplicates,
                                 "results": str(store.path), "resume": True, "overwrite": False,
                                 "backbones_file": cfg.backbones_file, **grid["preprocess"]})
        if job.fidelity == "exact":  # the code's settings; what the user set explicitly still wins (and is recorded)
            fcfg = FinetuneConfig(**{**fcfg.to_dict(), **exact_settings(grid, job), **user_overrides(cfg, grid, job)})
        same = json.dumps({k: v for k, v in fcfg.to_dict().items() if k in _BackboneDatasetConfig.model_fields},
                          sort_keys=True, default=str)
        if same not in inputs:
            inputs[same] = finetune_inputs(fcfg)
        key = finetune_run_key(fcfg, inputs[same])  # `out` is not part of the key
        fcfg = fcfg.model_copy(update={"out": str(job.folder(out_root, key))})
        _run_row(job, fcfg, key, "finetune", run_finetune, store, advance, fail, fidelity_entry(grid, job, cfg))


def _run_row(job: Job, row_cfg, key: str, kind: str, run, store: ResultsStore, advance, fail,
             fidelity: dict | None = None) -> None:
    """One sweep row: skipped when its row is stored (or its finished folder holds it), else run and printed;
    a failure is handed to ``fail`` (recorded with --keep-going, raised otherwise). The stored row (and its
    results.json) gets the ``fidelity`` it ran and its departures; a rerun adds them to rows stored before a kill."""
    try:
        ran = not store.has(key) and not _store_finished(Path(row_cfg.out), key, store, kind)
        if ran:
            rec = run(row_cfg)
            console.print(f"  {job.label}: {rec['headline_metric']['name']} {rec['headline_metric']['value']:.4f}")
        if fidelity is not None:
            store.annotate(key, {"fidelity": fidelity}, Path(row_cfg.out) / "results.json")
    except Exception as exc:
        fail([job], exc)
        return
    advance(job, ran)


def _store_finished(out: Path, key: str, store: ResultsStore, kind: str) -> bool:
    """A run folder that finished but whose row never reached this store (killed in between, or
    another --results): store its record instead of training again."""
    if complete_run(out, key, store, kind, any_store=True) is None:
        return False
    console.print(f"  stored the finished {kind} in {out} (its row was not in {store.path})")
    return True
