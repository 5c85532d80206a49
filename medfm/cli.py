"""The ``medfm`` command line: a thin layer that turns options into configs and calls the stages.

Every option is a config key (``--config`` file values are overridden by options given here).
User-fixable problems print one line, ``medfm: error: <problem> — <fix>``, and exit with 2.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer

from medfm.errors import MedfmError

app = typer.Typer(
    help="Which natural-domain foundation model transfers best to your medical classification task?",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ConfigOpt = Annotated[Optional[str], typer.Option("--config", help="JSON/YAML config; options given here override it")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the result record as JSON on stdout")]


def _emit(record: dict, as_json: bool, table=None) -> None:
    from medfm.ui import stdout_console

    if as_json:
        sys.stdout.write(json.dumps(record, indent=2) + "\n")
    elif table is not None:
        stdout_console().print(table)


@app.command()
def extract(
    backbone: Annotated[Optional[str], typer.Option(help="backbone name (`medfm backbones`)")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="dataset name (`medfm datasets`), CSV manifest or image folder")] = None,
    weights: Annotated[Optional[str], typer.Option(help="PATH to a local checkpoint, 'random', or omit for the official weights")] = None,
    data_root: Annotated[Optional[str], typer.Option(help="folder holding registry datasets [$MEDFM_DATA, ../shared/data]")] = None,
    cache: Annotated[Optional[str], typer.Option(help="cache path (.zarr dir or .h5 file) [$MEDFM_CACHE/<dataset>/...]")] = None,
    format: Annotated[Optional[str], typer.Option(help="zarr (default) or h5")] = None,
    tokens: Annotated[Optional[bool], typer.Option("--tokens/--no-tokens", help="also store patch tokens")] = None,
    feature: Annotated[Optional[str], typer.Option(help="pooled feature kind: cls, mean, cls+mean, pooled")] = None,
    img_size: Annotated[Optional[int], typer.Option(help="input size (ViTs resample their position embedding)")] = None,
    grey: Annotated[Optional[str], typer.Option(help="grey images: repeat (to RGB, default) or red (the stem's red-channel filter only, as study 1's 1-channel stem)")] = None,
    layers: Annotated[Optional[int], typer.Option(help="--feature of each of the last k blocks, concatenated [1]")] = None,
    batch_size: Annotated[Optional[str], typer.Option(help="images per forward pass, or 'auto' (GPU: the largest power of two that fits memory; CPU: 64) [64]")] = None,
    num_workers: Annotated[Optional[int], typer.Option(help="image-decoding worker processes [auto]")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = None,
    compile: Annotated[Optional[bool], typer.Option("--compile", help="torch.compile the backbone's forward pass (same features; compiles before the run, tens of seconds)")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="stored feature dtype: float16 (default) or float32")] = None,
    split_seed: Annotated[Optional[int], typer.Option(help="seed of any split medfm makes [0]")] = None,
    resume: Annotated[Optional[bool], typer.Option("--resume/--no-resume", help="continue an interrupted extraction [on]")] = None,
    chunk_rows: Annotated[Optional[int], typer.Option(help="rows per resumable chunk, a multiple of --batch-size [auto]")] = None,
    skip_bad: Annotated[Optional[bool], typer.Option("--skip-bad", help="skip rows whose file is missing/unreadable or label unknown (each listed on the log)")] = None,
    pixels: Annotated[Optional[str], typer.Option(help="pixel cache from `medfm prepare`: PATH, or 'none' [auto: a matching one under $MEDFM_CACHE]")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
):
    """Run a frozen backbone once over a dataset and write a fingerprinted feature cache."""
    opts = {k: v for k, v in locals().items() if k not in ("config", "as_json")}
    from medfm.config import ExtractConfig
    from medfm.extract import run_extract

    result = run_extract(ExtractConfig.load(config, opts))
    if result.rank:
        return  # under torchrun only rank 0 prints
    if as_json:
        _emit(result.to_dict(), True)
    else:
        typer.echo(str(result.cache))


@app.command()
def prepare(
    dataset: Annotated[Optional[str], typer.Option(help="dataset name (`medfm datasets`), CSV manifest or image folder")] = None,
    size: Annotated[Optional[int], typer.Option(help="side of the stored RGB squares, e.g. 224, 256, 518 [256]")] = None,
    data_root: Annotated[Optional[str], typer.Option(help="folder holding registry datasets [$MEDFM_DATA, ../shared/data]")] = None,
    out: Annotated[Optional[str], typer.Option(help="pixel cache path (.zarr) [$MEDFM_CACHE/<dataset>/pixels-<size>px-<fp>.zarr]")] = None,
    workers: Annotated[Optional[int], typer.Option(help="decoding worker processes [auto: CPU count, at most 8]")] = None,
    chunk_rows: Annotated[Optional[int], typer.Option(help="rows per resumable chunk [auto: a power of two, <= ~8 MB]")] = None,
    compress: Annotated[Optional[str], typer.Option(help="chunk codec: none (fastest reads, default), lz4, zstd (smallest)")] = None,
    split_seed: Annotated[Optional[int], typer.Option(help="seed of any split medfm makes [0]")] = None,
    skip_bad: Annotated[Optional[bool], typer.Option("--skip-bad", help="skip rows whose file is missing/unreadable or label unknown")] = None,
    resume: Annotated[Optional[bool], typer.Option("--resume/--no-resume", help="continue an interrupted prepare [on]")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
):
    """Decode every image once into a uint8 pixel cache that `medfm extract` reads for every backbone."""
    opts = {k: v for k, v in locals().items() if k not in ("config", "as_json")}
    from medfm.config import PrepareConfig
    from medfm.pixels import run_prepare

    result = run_prepare(PrepareConfig.load(config, opts))
    if as_json:
        _emit(result.to_dict(), True)
    else:
        typer.echo(str(result.cache))


@app.command()
def probe(
    cache: Annotated[Optional[str], typer.Option(help="feature cache made by `medfm extract`")] = None,
    head: Annotated[Optional[str], typer.Option(help="head: linear, logreg, knn, deit")] = None,
    metric: Annotated[Optional[str], typer.Option(help="metric that chooses hyper-parameters [dataset's headline]")] = None,
    out: Annotated[Optional[str], typer.Option(help="run folder for config.json + results.json [$MEDFM_RUNS/probe/...]")] = None,
    seed: Annotated[Optional[int], typer.Option(help="training seed [0]")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="training epochs [30]")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="linear head mini-batch size [1024]")] = None,
    min_steps: Annotated[Optional[int], typer.Option(help="linear head: at least this many steps [200]")] = None,
    fraction: Annotated[Optional[float], typer.Option(help="label budget: stratified share of train, >= 1 per class [1.0]")] = None,
    temperature: Annotated[Optional[float], typer.Option(help="knn head: vote weight exp(cos / T) [0.07]")] = None,
    head_depth: Annotated[Optional[int], typer.Option(help="deit head: DeiT-B blocks, 1..12 [12]")] = None,
    deit_weights: Annotated[Optional[str], typer.Option(help="deit head: ImageNet DeiT-B checkpoint [random init]")] = None,
    head_lr: Annotated[Optional[float], typer.Option(help="deit head: AdamW learning rate [1e-4]")] = None,
    head_batch_size: Annotated[Optional[int], typer.Option(help="deit head: mini-batch size [64]")] = None,
    bootstrap: Annotated[Optional[int], typer.Option(help="test bootstrap resamples for the 95% CI [1000]")] = None,
    store_predictions: Annotated[Optional[bool], typer.Option("--store-predictions/--no-store-predictions", help="keep per-sample test scores in the record [on]")] = None,
    normalize: Annotated[Optional[str], typer.Option(help="feature normalisation: standard, l2, none")] = None,
    class_weight: Annotated[Optional[bool], typer.Option("--class-weight/--no-class-weight", help="inverse-frequency class weights")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda")] = None,
    overwrite: Annotated[Optional[bool], typer.Option("--overwrite", help="replace results.json in an existing --out")] = None,
    results: Annotated[Optional[str], typer.Option(help="results store to append to [$MEDFM_RUNS/results.sqlite]")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
):
    """Train a head on a feature cache (hyper-parameters chosen on val) and report test metrics."""
    opts = {k: v for k, v in locals().items() if k not in ("config", "as_json")}
    from medfm.config import ProbeConfig
    from medfm.probe import run_probe
    from medfm.report_table import results_table

    record = run_probe(ProbeConfig.load(config, opts))
    _emit(record, as_json, results_table(record))
    if not as_json:
        typer.echo(f"results: {record['out']}/results.json")


def _csv(value: str | None, cast=str) -> list | None:
    return None if value is None else [cast(v.strip()) for v in value.split(",") if v.strip()]


@app.command()
def sweep(
    preset: Annotated[Optional[str], typer.Option(help="a named study grid (--list-presets)")] = None,
    backbones: Annotated[Optional[str], typer.Option(help="comma list of backbones")] = None,
    datasets: Annotated[Optional[str], typer.Option(help="comma list of datasets")] = None,
    heads: Annotated[Optional[str], typer.Option(help="comma list of heads: linear, logreg, knn, deit [linear]")] = None,
    fractions: Annotated[Optional[str], typer.Option(help="label budgets, e.g. 0.01,0.1,1.0 [1.0]")] = None,
    seeds: Annotated[Optional[str], typer.Option(help="seeds, e.g. 0,1,2 [0]")] = None,
    weights: Annotated[Optional[list[str]], typer.Option(help="BACKBONE=PATH|random (repeatable); others: official weights")] = None,
    data_root: Annotated[Optional[str], typer.Option(help="folder holding registry datasets")] = None,
    img_size: Annotated[Optional[str], typer.Option(help="input size: one for every backbone (64), or per backbone (dinov2_vits14=56,mobilenetv2=64) [each backbone's default]")] = None,
    tokens: Annotated[Optional[bool], typer.Option("--tokens/--no-tokens", help="store patch tokens [auto: when a head needs them]")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda")] = None,
    results: Annotated[Optional[str], typer.Option(help="results store [$MEDFM_RUNS/results.sqlite]")] = None,
    out: Annotated[Optional[str], typer.Option(help="folder of per-row run folders [$MEDFM_RUNS/sweep/<preset>]")] = None,
    scenarios: Annotated[Optional[str], typer.Option(help="frozen (probes), unfrozen (fine-tunes) or frozen,unfrozen [preset's, else frozen]")] = None,
    unfreeze: Annotated[Optional[str], typer.Option(help="unfrozen rows: last N blocks trained, comma list of N or 'all' [preset's, else all]")] = None,
    finetune: Annotated[Optional[list[str]], typer.Option(help="KEY=VALUE `medfm finetune` setting for every fine-tune (repeatable), e.g. epochs=10")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="probe epochs (every head)")] = None,
    head_depth: Annotated[Optional[int], typer.Option(help="deit head: DeiT-B blocks")] = None,
    deit_weights: Annotated[Optional[str], typer.Option(help="deit head: ImageNet DeiT-B checkpoint")] = None,
    bootstrap: Annotated[Optional[int], typer.Option(help="test bootstrap resamples per probe")] = None,
    plan_only: Annotated[Optional[bool], typer.Option("--plan", help="print the plan, run nothing")] = None,
    keep_going: Annotated[Optional[bool], typer.Option("--keep-going", help="record a failing row (with its error) and go on; exit status 2 when any failed")] = None,
    list_presets: Annotated[bool, typer.Option("--list-presets", help="list the presets and exit")] = False,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
):
    """Plan and run a backbones x datasets x heads x budgets x seeds grid of probes and/or fine-tunes; resumable."""
    from medfm.config import SweepConfig
    from medfm.errors import MedfmError as _Err

    if list_presets:
        from medfm.presets import PRESETS

        for name, p in PRESETS.items():
            unfrozen = (f"; unfreeze {', '.join(map(str, p.unfreeze))} with "
                        f"{', '.join(f'{k}={v}' for k, v in p.finetune.items()) or 'the fine-tune defaults'}"
                        if "unfrozen" in p.scenarios else "")
            typer.echo(f"{name}: {p.description}\n  backbones: {', '.join(p.backbones)}\n  datasets: {', '.join(p.datasets)}"
                       f"\n  heads: {', '.join(p.heads)}; scenarios: {', '.join(p.scenarios)}{unfrozen}")
        return
    pairs = {}
    for item in weights or []:
        if "=" not in item:
            raise _Err(f"--weights {item!r} is not BACKBONE=PATH", "e.g. --weights dinov2_vits14=../shared/weights/x.safetensors")
        k, v = item.split("=", 1)
        pairs[k.strip()] = v.strip()
    ft_opts = {}
    for item in finetune or []:
        if "=" not in item:
            raise _Err(f"--finetune {item!r} is not KEY=VALUE", "e.g. --finetune epochs=10 --finetune lr=3e-5")
        k, v = item.split("=", 1)
        ft_opts[k.strip()] = None if v.strip().lower() in ("none", "null") else v.strip()  # FinetuneConfig parses the value
    probe_opts = {k: v for k, v in {"epochs": epochs, "head_depth": head_depth, "deit_weights": deit_weights,
                                    "bootstrap": bootstrap}.items() if v is not None}
    opts = {"preset": preset, "backbones": _csv(backbones), "datasets": _csv(datasets), "heads": _csv(heads),
            "fractions": _csv(fractions, float), "seeds": _csv(seeds, int), "weights": pairs or None,
            "data_root": data_root, "img_size": img_size, "tokens": tokens, "device": device, "results": results,
            "out": out, "probe": probe_opts or None, "plan_only": plan_only, "keep_going": keep_going, "scenarios": _csv(scenarios),
            "unfreeze": _csv(unfreeze, lambda u: int(u) if u.lstrip("-").isdigit() else u), "finetune": ft_opts or None}
    from medfm.sweep import raise_for_failures, run_sweep  # after --list-presets: it imports the probe heads (torch)

    summary = run_sweep(SweepConfig.load(config, opts))
    if as_json:
        _emit(summary, True)
    else:
        p, f = summary["probes"], summary["finetunes"]
        typer.echo(f"{p['planned']} probes + {f['planned']} fine-tunes planned, {p['ran']} + {f['ran']} run, "
                   f"{p['skipped']} + {f['skipped']} already done; results: {summary['results']}")
    raise_for_failures(summary)


@app.command()
def report(
    results: Annotated[Optional[str], typer.Option(help="results store (SQLite) [$MEDFM_RUNS/results.sqlite]")] = None,
    out: Annotated[Optional[str], typer.Option(help="output folder [medfm-report]")] = None,
    bootstrap: Annotated[Optional[int], typer.Option(help="resamples for the seed-pooled 95% CI [1000]")] = None,
    kind: Annotated[Optional[str], typer.Option(help="only probe or finetune rows")] = None,
    dataset: Annotated[Optional[list[str]], typer.Option(help="only these datasets (repeatable)")] = None,
    fraction: Annotated[Optional[list[float]], typer.Option(help="only these label budgets (repeatable)")] = None,
    where: Annotated[Optional[list[str]], typer.Option(help="only rows whose run identity has FIELD=VALUE, e.g. backbone=mobilenetv2, weights=random, img_size=224 (repeatable)")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
):
    """Leaderboard (Markdown, CSV, self-contained HTML) and figures from a results store."""
    opts = {k: v for k, v in locals().items() if k not in ("config", "as_json")}
    from medfm.config import ReportConfig
    from medfm.report import run_report

    result = run_report(ReportConfig.load(config, opts))
    if as_json:
        _emit(result, True)
    else:
        typer.echo(result["html"])


@app.command()
def demo(
    data_root: Annotated[Optional[str], typer.Option(help="folder holding pneumoniamnist.npz [$MEDFM_DATA, ../shared/data]")] = None,
    weights: Annotated[Optional[str], typer.Option(help="DINOv2 ViT-S/14 checkpoint [$MEDFM_WEIGHTS, ../shared/weights]")] = None,
    as_json: JsonOpt = False,
):
    """Compare DINOv2-S and an ImageNet CNN on real PneumoniaMNIST: extract, probe, print the table."""
    from medfm.demo import DEMO_DATASET, run_demo
    from medfm.report_table import comparison_table

    records = run_demo(data_root, weights)
    if as_json:
        _emit({"results": records}, True)
    else:
        _emit({}, False, comparison_table(records, f"frozen backbones + linear probe on {DEMO_DATASET} (real data)"))


@app.command()
def run(
    params: Annotated[Optional[str], typer.Option("--params", help="first study's params.json (mapped; used/ignored keys are listed)")] = None,
    config: Annotated[Optional[str], typer.Option("--config", help="medfm config (YAML/JSON) with extract + probe, or finetune sections")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="only print how --params maps onto medfm")] = False,
    as_json: JsonOpt = False,
):
    """Run a whole experiment from one file: the first study's params.json or medfm's own config."""
    from medfm.studyparams import run_config_file, run_study_params

    if (params is None) == (config is None):
        raise MedfmError("give exactly one of --params and --config", "see `medfm run --help`")
    record = run_study_params(params, dry_run) if params else run_config_file(config)
    if as_json or dry_run:
        _emit(record, True)
    elif "headline_metric" in record:
        from medfm.report_table import results_table

        _emit(record, False, results_table(record))


@app.command()
def finetune(
    backbone: Annotated[Optional[str], typer.Option(help="backbone name (`medfm backbones`)")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="dataset name (`medfm datasets`), CSV manifest or image folder")] = None,
    weights: Annotated[Optional[str], typer.Option(help="PATH to a local checkpoint, 'random', or omit for the official weights")] = None,
    data_root: Annotated[Optional[str], typer.Option(help="folder holding registry datasets [$MEDFM_DATA, ../shared/data]")] = None,
    unfreeze: Annotated[Optional[str], typer.Option(help="train the last N blocks (0 = frozen backbone, 'all' or -1 = full) [0]")] = None,
    head: Annotated[Optional[str], typer.Option(help="head: linear (pooled feature) or deit (tokens) [linear]")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="training epochs [100]")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="global batch per step, split over torchrun processes [32]")] = None,
    lr: Annotated[Optional[float], typer.Option(help="peak learning rate of the last block [1e-4]")] = None,
    img_size: Annotated[Optional[int], typer.Option(help="input size (ViTs resample their position embedding)")] = None,
    grey: Annotated[Optional[str], typer.Option(help="grey images: repeat (to RGB, default) or red (the stem's red-channel filter only, as study 1's 1-channel stem)")] = None,
    fraction: Annotated[Optional[float], typer.Option(help="label budget: stratified share of train, >= 1 per class [1.0]")] = None,
    seed: Annotated[Optional[int], typer.Option(help="training seed [0]")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda")] = None,
    out: Annotated[Optional[str], typer.Option(help="run folder [$MEDFM_RUNS/finetune/...]")] = None,
    resume: Annotated[Optional[bool], typer.Option("--resume/--no-resume", help="continue from the run folder's last checkpoint [on]")] = None,
    overwrite: Annotated[Optional[bool], typer.Option("--overwrite", help="replace an existing run in --out")] = None,
    deterministic: Annotated[Optional[bool], typer.Option("--deterministic/--no-deterministic", help="deterministic kernels")] = None,
    results: Annotated[Optional[str], typer.Option(help="results store to append to [$MEDFM_RUNS/results.sqlite]")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
):
    """Fine-tune the last N blocks with a head (every FinetuneConfig key is settable with --config)."""
    opts = {k: v for k, v in locals().items() if k not in ("config", "as_json")}
    if opts["unfreeze"] is not None and opts["unfreeze"].lstrip("-").isdigit():
        opts["unfreeze"] = int(opts["unfreeze"])
    from medfm.finetune import FinetuneConfig, run_finetune
    from medfm.report_table import results_table

    record = run_finetune(FinetuneConfig.load(config, opts))
    if "stored" not in record:
        return  # under torchrun only rank 0 writes and prints
    table = results_table({**record, "hyperparameters": {}})
    table.caption = (f"last {record['unfreeze']} of {record['blocks']} blocks trained ({record['trainable_params']:,} "
                     f"parameters); epoch {record['tested_epoch']} of {record['epochs_run']} tested (best on val)")
    _emit(record, as_json, table)
    if not as_json:
        typer.echo(f"results: {record['out']}/results.json")


@app.command()
def backbones(
    markdown: Annotated[bool, typer.Option("--markdown", help="print the table as Markdown (README's table is this)")] = False,
    features: Annotated[bool, typer.Option("--features", help="list the feature kinds")] = False,
    check: Annotated[Optional[str], typer.Option("--check", help="build NAME and run one forward pass")] = None,
    weights: Annotated[Optional[str], typer.Option(help="with --check: PATH, 'random', or omit for the official weights")] = None,
    img_size: Annotated[Optional[int], typer.Option(help="with --check: input size")] = None,
    feature: Annotated[Optional[str], typer.Option(help="with --check: feature kind")] = None,
    layers: Annotated[Optional[int], typer.Option(help="with --check: last k blocks")] = None,
    as_json: JsonOpt = False,
):
    """List the registered backbones (and whether their weights are here), or --check one."""
    from rich.table import Table

    from medfm.backbones.table import backbone_rows, markdown_table, weights_present
    from medfm.ui import stdout_console

    if check:
        from medfm.backbones.check import check_backbone

        record = check_backbone(check, weights, img_size, feature, layers)
        if as_json:
            _emit(record, True)
        else:
            t = Table(title=f"medfm backbones --check {check}: one forward pass of a 2-image batch")
            t.add_column("key")
            t.add_column("value")
            for k, v in record.items():
                t.add_row(k, str(v))
            stdout_console().print(t)
        return
    if features:
        from medfm.backbones import FEATURE_KINDS

        t = Table(title="feature kinds (--feature; `tokens` is stored with --tokens)")
        t.add_column("kind")
        t.add_column("what")
        for name, kind in FEATURE_KINDS.items():
            t.add_row(name, kind.description)
        stdout_console().print(t)
        return
    if markdown:
        typer.echo(markdown_table())
        return
    header, rows = backbone_rows()
    if as_json:
        _emit({"backbones": [dict(zip(header, r), weights_local=weights_present(r[0])) for r in rows]}, True)
        return
    t = Table(title=f"{len(rows)} backbones")
    for col in (*header, "weights here"):
        t.add_column(col, no_wrap=col == "name", overflow="fold")
    for row in rows:
        t.add_row(*row, weights_present(row[0]))
    stdout_console().print(t)


datasets_app = typer.Typer(help="List the registered datasets; `medfm datasets inspect` checks one.", invoke_without_command=True)
app.add_typer(datasets_app, name="datasets")


@datasets_app.callback()
def datasets(
    ctx: typer.Context,
    data_root: Annotated[Optional[str], typer.Option(help="folder holding registry datasets")] = None,
):
    """List the registered datasets (with their protocols) and whether their files are under the data root."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from medfm.data import DATASETS
    from medfm.paths import find_data_root
    from medfm.ui import stdout_console

    root = find_data_root(data_root)
    t = Table(title=f"{len(DATASETS)} datasets (data root: {root or 'not set'})")
    for col in ("name", "task", "classes", "headline", "modality", "licence", "protocols", "present"):
        t.add_column(col)
    for name, e in DATASETS.items():
        present = "yes" if root and (root / e.location).exists() else "no"
        protocols = ", ".join(p.name for p in e.protocols)
        t.add_row(name, e.task, str(len(e.classes or ())), e.headline_metric, e.modality, e.licence, protocols, present)
    stdout_console().print(t)


@datasets_app.command("inspect")
def datasets_inspect(
    dataset: Annotated[str, typer.Argument(help="registry name (NAME[:PROTOCOL][?K=V]), CSV manifest or image folder")],
    data_root: Annotated[Optional[str], typer.Option(help="folder holding registry datasets")] = None,
    split_seed: Annotated[int, typer.Option(help="seed of any split medfm makes")] = 0,
    decode: Annotated[bool, typer.Option("--decode/--no-decode", help="decode every image (sizes, unreadable files)")] = True,
    as_json: JsonOpt = False,
):
    """Print what medfm understood: classes, counts per split, imbalance, image sizes, problems found."""
    from medfm.data.inspection import inspect_dataset, print_report

    report = inspect_dataset(dataset, data_root, split_seed, decode)
    if as_json:
        _emit(report, True)
    else:
        print_report(report)


@app.command()
def metrics(as_json: JsonOpt = False):
    """List the metric registry: name, the task kinds it applies to, what it measures."""
    from medfm.metrics import METRICS

    rows = [{"name": m.name, "tasks": list(m.tasks), "description": m.description} for _, m in METRICS.items()]
    if as_json:
        _emit({"metrics": rows}, True)
        return
    from rich.table import Table

    from medfm.ui import stdout_console

    t = Table(title=f"{len(rows)} metrics (--metric NAME; a dataset's headline metric is its default)")
    for col in ("name", "tasks", "what it measures"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], ", ".join(r["tasks"]), r["description"])
    stdout_console().print(t)


@app.command()
def version():
    """Print medfm's version."""
    from medfm import __version__

    typer.echo(__version__)


def main() -> None:
    try:
        app()
    except MedfmError as exc:
        sys.stderr.write(f"medfm: error: {exc}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("medfm: interrupted; rerun the same command to resume\n")
        sys.exit(130)


if __name__ == "__main__":
    main()
