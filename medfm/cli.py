"""The ``medfm`` command line: a thin layer that turns options into configs and calls the stages.

Every option is a config key (``--config`` file values are overridden by options given here).
User-fixable problems print one line, ``medfm: error: <problem> — <fix>``, and exit with 2.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Optional

import typer

from medfm.config_cli import config_command
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


CONFIG_PARAMS = {"config": (ConfigOpt, None), "as_json": (JsonOpt, False)}  # CLI-only options of every config command


from medfm.config import (  # noqa: E402 (pydantic only: `medfm --help` does not import torch)
    BACKBONES_FILE_HELP, ExtractConfig, FinetuneConfig, PrepareConfig, ProbeConfig, ReportConfig, SweepConfig)


@config_command(app, ExtractConfig, extra=CONFIG_PARAMS)
def extract(settings: dict, config: str | None, as_json: bool):
    """Run a frozen backbone once over a dataset and write a fingerprinted feature cache."""
    from medfm.extract import run_extract

    result = run_extract(ExtractConfig.load(config, settings))
    if result.rank:
        return  # under torchrun only rank 0 prints
    if as_json:
        _emit(result.to_dict(), True)
    else:
        typer.echo(str(result.cache))


@config_command(app, PrepareConfig, extra=CONFIG_PARAMS)
def prepare(settings: dict, config: str | None, as_json: bool):
    """Decode every image once into a uint8 pixel cache that `medfm extract` reads for every backbone."""
    from medfm.pixels import run_prepare

    result = run_prepare(PrepareConfig.load(config, settings))
    if as_json:
        _emit(result.to_dict(), True)
    else:
        typer.echo(str(result.cache))


@config_command(app, ProbeConfig, extra=CONFIG_PARAMS)
def probe(settings: dict, config: str | None, as_json: bool):
    """Train a head on a feature cache (hyper-parameters chosen on val) and report test metrics.

    Without --cache: every finished cache under $MEDFM_CACHE (or those of --dataset / --backbone) whose probe
    with these options is not in the results store yet."""
    from medfm.probe import run_probe
    from medfm.report_table import results_table

    cfg = ProbeConfig.load(config, settings)
    if cfg.cache is None:
        from medfm.probe.every_cache import probe_every_cache

        summary = probe_every_cache(cfg)
        if as_json:
            _emit(summary, True)
        else:
            typer.echo(f"probed {len(summary['probed'])} cache(s), {len(summary['already_stored'])} already in "
                       f"{summary['results']}")
        return
    if cfg.dataset or cfg.backbone:
        raise MedfmError("--dataset / --backbone pick caches when --cache is not given", "give one or the other")
    record = run_probe(cfg)
    _emit(record, as_json, results_table(record))
    if not as_json:
        typer.echo(f"results: {record['out']}/results.json")


def _list_presets() -> None:
    from medfm.fidelity import STUDIES
    from medfm.presets import PRESETS

    for name, p in PRESETS.items():
        unfrozen = (f"; unfreeze {', '.join(map(str, p.unfreeze))} with "
                    f"{', '.join(f'{k}={v}' for k, v in p.finetune.items()) or 'the fine-tune defaults'}"
                    if "unfrozen" in p.scenarios else "")
        typer.echo(f"{name}: {p.description}\n  backbones: {', '.join(p.backbones)}\n  datasets: {', '.join(p.datasets)}"
                   f"\n  heads: {', '.join(p.heads)}; scenarios: {', '.join(p.scenarios)}{unfrozen}"
                   f"\n  fidelity: {p.fidelity}" + (f" (--fidelity exact follows {STUDIES[p.code].source})" if p.code else ""))


SWEEP_PROBE_SHORTCUTS = ("epochs", "head_depth", "deit_weights", "bootstrap")  # ProbeConfig keys, into sweep.probe


@config_command(app, SweepConfig, borrow={"probe": (ProbeConfig, SWEEP_PROBE_SHORTCUTS)},
                extra={**CONFIG_PARAMS, "list_presets": (
                    Annotated[bool, typer.Option("--list-presets", help="list the presets and exit")], False)})
def sweep(settings: dict, config: str | None, as_json: bool, list_presets: bool):
    """Plan and run a backbones x datasets x heads x budgets x seeds grid of probes and/or fine-tunes; resumable."""
    if list_presets:
        _list_presets()
        return
    from medfm.sweep import raise_for_failures, run_sweep  # after --list-presets: it imports the probe heads (torch)

    summary = run_sweep(SweepConfig.load(config, settings))
    if as_json:
        _emit(summary, True)
    else:
        p, f = summary["probes"], summary["finetunes"]
        typer.echo(f"{p['planned']} probes + {f['planned']} fine-tunes planned, {p['ran']} + {f['ran']} run, "
                   f"{p['skipped']} + {f['skipped']} already done; results: {summary['results']}")
    raise_for_failures(summary)  # --keep-going with failed rows: one line, exit 2


@config_command(app, ReportConfig, extra=CONFIG_PARAMS)
def report(settings: dict, config: str | None, as_json: bool):
    """Leaderboard (Markdown, CSV, self-contained HTML) and figures from a results store."""
    from medfm.report import run_report

    result = run_report(ReportConfig.load(config, settings))
    if as_json:
        _emit(result, True)
    else:
        typer.echo(result["html"])


@app.command()
def demo(
    data_root: Annotated[Optional[str], typer.Option(help="folder holding pneumoniamnist.npz [$MEDFM_DATA, ../shared/data]")] = None,
    weights: Annotated[Optional[str], typer.Option(help="DINOv2 ViT-S/14 checkpoint [$MEDFM_WEIGHTS, ../shared/weights]")] = None,
    sam: Annotated[bool, typer.Option("--sam", help="MobileSAM vs LiteMedSAM vs DINOv2-S, linear + kNN, on real BUSI "
                                                    "and Kermany CXR (a stratified subset; see --per-class)")] = False,
    per_class: Annotated[int, typer.Option(help="--sam: images per class (per official split) of each dataset",
                                           min=2)] = 40,
    as_json: JsonOpt = False,
):
    """Compare DINOv2-S and an ImageNet CNN on real PneumoniaMNIST (--sam: MobileSAM vs LiteMedSAM vs DINOv2-S on
    real BUSI and Kermany CXR): extract, probe, print the table."""
    from medfm.demo import DEMO_DATASET, run_demo
    from medfm.report_table import comparison_table

    if sam:
        from medfm.demo_sam import run_sam_demo, sam_demo_table

        records = run_sam_demo(per_class, data_root, weights)
        if as_json:
            _emit({"results": records}, True)
        else:
            _emit({}, False, sam_demo_table(records, per_class))
        return
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
    fidelity: Annotated[str, typer.Option("--fidelity", help="--params: fast (medfm's cached path) or exact (as the "
                                                             "study's code ran it; every setting listed with its code "
                                                             "location)")] = "fast",
    as_json: JsonOpt = False,
):
    """Run a whole experiment from one file: the first study's params.json or medfm's own config."""
    from medfm.studyparams import run_config_file, run_study_params

    if (params is None) == (config is None):
        raise MedfmError("give exactly one of --params and --config", "see `medfm run --help`")
    if fidelity != "fast" and params is None:
        raise MedfmError("--fidelity applies to --params (a study's params.json)", "drop --fidelity, or pass --params")
    record = run_study_params(params, dry_run, fidelity) if params else run_config_file(config)
    if as_json or dry_run:
        _emit(record, True)
    elif "headline_metric" in record:
        from medfm.report_table import results_table

        _emit(record, False, results_table(record))


@config_command(app, FinetuneConfig, extra=CONFIG_PARAMS)
def finetune(settings: dict, config: str | None, as_json: bool):
    """Fine-tune the last N blocks with a head (every option is also a --config key)."""
    from medfm.finetune import run_finetune
    from medfm.report_table import results_table

    record = run_finetune(FinetuneConfig.load(config, settings))
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
    backbones_file: Annotated[Optional[str], typer.Option(help=BACKBONES_FILE_HELP)] = None,
    as_json: JsonOpt = False,
):
    """List the registered backbones (built-in and your own, and whether their weights are here), or --check one."""
    from rich.table import Table

    from medfm.backbones.table import backbone_rows, markdown_table, user_backbone_rows, weights_present
    from medfm.ui import stdout_console

    if check:
        from medfm.backbones.check import check_backbone

        record = check_backbone(check, weights, img_size, feature, layers, backbones_file=backbones_file)
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
    user_header, user = user_backbone_rows(backbones_file)
    if as_json:
        _emit({"backbones": [dict(zip(header, r), weights_local=weights_present(r[0])) for r in rows],
               "user_backbones": [dict(zip(user_header, r)) for r in user]}, True)
        return
    t = Table(title=f"{len(rows)} backbones (any other library model: timm:<model>[.<tag>], open_clip:<model>/<tag>, "
                    "open_clip:hf-hub:<org>/<repo>, hf:<org>/<repo>)")
    for col in (*header, "weights here"):
        t.add_column(col, no_wrap=col == "name", overflow="fold")
    for row in rows:
        t.add_row(*row, weights_present(row[0]))
    stdout_console().print(t)
    if user:
        u = Table(title=f"{len(user)} backbones of your own")
        for col in user_header:
            u.add_column(col, no_wrap=col == "name", overflow="fold")
        for row in user:
            u.add_row(*row)
        stdout_console().print(u)


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
    from medfm.data.zoo import files_present, known_class_count
    from medfm.paths import find_data_root
    from medfm.ui import stdout_console

    root = find_data_root(data_root)
    t = Table(title=f"{len(DATASETS)} datasets (data root: {root or 'not set'}; short names in brackets)")
    for col in ("name", "task", "classes", "headline", "modality", "licence", "protocols", "present"):
        t.add_column(col)
    for name, e in DATASETS.items():
        present = files_present(e, root)
        protocols = ", ".join(p.name for p in e.protocols)
        shown = f"{name} ({', '.join(DATASETS.aliases_of(name))})" if DATASETS.aliases_of(name) else name
        classes = known_class_count(e)
        t.add_row(shown, e.task, str(classes) if classes else "from labels", e.headline_metric, e.modality, e.licence,
                  protocols, present)
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


cache_app = typer.Typer(help="Check caches: `medfm cache verify PATH [--repair]`.")
app.add_typer(cache_app, name="cache")


@cache_app.command("verify")
def cache_verify(
    path: Annotated[str, typer.Argument(help="a feature cache (.zarr / .h5) or pixel cache")],
    repair: Annotated[bool, typer.Option("--repair", help="recompute exactly the bad chunks (reruns the store's own command)")] = False,
    as_json: JsonOpt = False,
):
    """Check every chunk of a cache against the digest recorded when it was written."""
    from medfm.cache.kinds import FEATURES, PIXELS
    from medfm.cache.verify import verify
    from medfm.extract.runner import repair_extract
    from medfm.pixels.prepare import repair_prepare

    report = verify(path, {FEATURES.fmt: repair_extract, PIXELS.fmt: repair_prepare} if repair else None,
                    say=lambda line: typer.echo(line, err=as_json))
    if as_json:
        _emit(report, True)
    else:
        typer.echo(f"verified {report['path']}: {report['chunks']} data chunks and the labels and ids of every split "
                   f"match their digests" + (f" (repaired {len(report['repaired'])})" if report["repaired"] else ""))


@app.command()
def metrics(as_json: JsonOpt = False):
    """List the metric registry: name, the task kinds it applies to, what it measures."""
    from rich.table import Table

    from medfm.metrics import METRICS
    from medfm.ui import stdout_console

    rows = [{"name": m.name, "tasks": list(m.tasks), "description": m.description} for _, m in METRICS.items()]
    if as_json:
        _emit({"metrics": rows}, True)
        return
    t = Table(title=f"{len(rows)} metrics (--metric NAME; a dataset's headline metric is its default)")
    for col in ("name", "tasks", "what it measures"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], ", ".join(r["tasks"]), r["description"])
    stdout_console().print(t)


@app.command()
def heads(as_json: JsonOpt = False):
    """List the heads: what each reads (pooled feature or patch tokens) and the stages it runs in."""
    from rich.table import Table

    from medfm.heads import HEADS
    from medfm.ui import stdout_console

    rows = [{"name": n, "reads": h.reads, "stages": list(h.stages), "summary": h.summary} for n, h in HEADS.items()]
    if as_json:
        _emit({"heads": rows}, True)
        return
    t = Table(title=f"{len(rows)} heads (probe: medfm probe --head; finetune: medfm finetune --head)")
    for col in ("name", "reads", "stages", "summary"):
        t.add_column(col)
    for r in rows:
        t.add_row(r["name"], r["reads"], ", ".join(r["stages"]), r["summary"])
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
