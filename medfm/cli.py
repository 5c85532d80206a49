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
    layers: Annotated[Optional[int], typer.Option(help="--feature of each of the last k blocks, concatenated [1]")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="images per forward pass [64]")] = None,
    num_workers: Annotated[Optional[int], typer.Option(help="image-decoding worker processes [auto]")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="stored feature dtype: float16 (default) or float32")] = None,
    split_seed: Annotated[Optional[int], typer.Option(help="seed of any split medfm makes [0]")] = None,
    resume: Annotated[Optional[bool], typer.Option("--resume/--no-resume", help="continue an interrupted extraction [on]")] = None,
    chunk_rows: Annotated[Optional[int], typer.Option(help="rows per resumable chunk, a multiple of --batch-size [auto]")] = None,
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
):
    """Run a frozen backbone once over a dataset and write a fingerprinted feature cache."""
    opts = {k: v for k, v in locals().items() if k not in ("config", "as_json")}
    from medfm.config import ExtractConfig
    from medfm.extract import run_extract

    result = run_extract(ExtractConfig.load(config, opts))
    if as_json:
        _emit(result.to_dict(), True)
    else:
        typer.echo(str(result.cache))


@app.command()
def probe(
    cache: Annotated[Optional[str], typer.Option(help="feature cache made by `medfm extract`")] = None,
    head: Annotated[Optional[str], typer.Option(help="head: linear")] = None,
    metric: Annotated[Optional[str], typer.Option(help="metric that chooses hyper-parameters [dataset's headline]")] = None,
    out: Annotated[Optional[str], typer.Option(help="run folder for config.json + results.json [$MEDFM_RUNS/probe/...]")] = None,
    seed: Annotated[Optional[int], typer.Option(help="training seed [0]")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="training epochs [100]")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="mini-batch size [256]")] = None,
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
def finetune():
    """Fine-tune the last N blocks end to end (not implemented yet)."""
    from medfm.finetune import run_finetune

    run_finetune()


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


@app.command()
def datasets(
    data_root: Annotated[Optional[str], typer.Option(help="folder holding registry datasets")] = None,
):
    """List the registered datasets and whether their files are under the data root."""
    from rich.table import Table

    from medfm.data import DATASETS
    from medfm.paths import find_data_root
    from medfm.ui import stdout_console

    root = find_data_root(data_root)
    t = Table(title=f"{len(DATASETS)} datasets (data root: {root or 'not set'})")
    for col in ("name", "task", "classes", "headline", "modality", "licence", "present"):
        t.add_column(col)
    for name, e in DATASETS.items():
        present = "yes" if root and (root / e.location).exists() else "no"
        t.add_row(name, e.task, str(len(e.classes or ())), e.headline_metric, e.modality, e.licence, present)
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
