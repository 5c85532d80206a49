"""Run configurations: every CLI option is a key here, and a run saves the config it ran with.

A config file (JSON or YAML) may hold the keys of one command flat, or sections named after the
commands (``extract:``, ``probe:``); options given on the command line override the file. Rerunning
a saved ``config.json`` with ``--config`` reproduces the run (kaiko eva does the same).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from medfm.errors import MedfmError


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    SECTION: ClassVar[str] = ""

    @classmethod
    def load(cls, file: str | Path | None, overrides: dict) -> _Config:
        data = {}
        if file is not None:
            data = _read_file(Path(file))
            if isinstance(data.get(cls.SECTION), dict):
                data = data[cls.SECTION]
        data.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "config"
            origin = f" in {file}" if file else ""
            raise MedfmError(f"invalid setting {where}{origin}: {err['msg']}", "see `medfm <command> --help`") from None

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


def _read_file(path: Path) -> dict:
    if not path.is_file():
        raise MedfmError(f"config file {path} not found", "check the --config path")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as exc:
        raise MedfmError(f"config file {path} is not valid {path.suffix[1:].upper()}: {exc}", "fix its syntax") from None
    if not isinstance(data, dict):
        raise MedfmError(f"config file {path} must hold a mapping of settings", "see README 'Configs'")
    return data


def _batch_size(value):
    """A positive whole number, or 'auto' (the CLI passes both as text)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        number = int(value) if not isinstance(value, bool) else 0
        if number >= 1 and number == float(value):
            return number
    except (TypeError, ValueError):
        pass
    raise ValueError(f"must be a positive whole number or 'auto', not {value!r}")


BatchSize = Annotated[int | Literal["auto"], BeforeValidator(_batch_size)]


def _img_sizes(value):
    """One size (64) or sizes per backbone ('dinov2_vits14=56,mobilenetv2=64', or a mapping); each >= 16."""
    if value is None or isinstance(value, dict):
        sizes = value
    elif isinstance(value, str) and "=" in value:
        sizes = {}
        for item in value.split(","):
            name, sep, size = item.partition("=")
            if not sep or not name.strip():
                raise ValueError(f"{item!r} is not BACKBONE=SIZE")
            sizes[name.strip()] = size.strip()
    else:
        sizes = {"": value}
    if sizes is None:
        return None
    out = {}
    for name, size in sizes.items():
        try:
            number = int(size)
        except (TypeError, ValueError):
            raise ValueError(f"image size {size!r} is not a whole number") from None
        if number < 16 or isinstance(size, bool) or number != float(size):
            raise ValueError(f"image size {size!r} must be a whole number >= 16")
        out[name] = number
    return out[""] if "" in out else out


ImgSizes = Annotated[int | dict[str, int] | None, BeforeValidator(_img_sizes)]


class _BackboneDatasetConfig(_Config):
    """The keys that say which backbone runs on which dataset and split: one definition for extract and finetune.

    Keys are dumped in declaration order, base first: these open every saved extract / finetune config.
    """

    backbone: str
    dataset: str
    weights: str | None = None  # PATH, 'random', or None/'pretrained' for the official weights
    data_root: str | None = None
    img_size: int | None = Field(None, ge=16)  # input size [the backbone's default] (ViTs resample their position embedding)
    feature: str | None = None  # pooled feature kind [the backbone's (the studies') default]
    split_seed: int = 0  # seed of any split medfm makes
    grey: Literal["repeat", "red"] = "repeat"  # grey images: repeated to RGB, or through the stem's red filter only


class ExtractConfig(_BackboneDatasetConfig):
    SECTION: ClassVar[str] = "extract"
    cache: str | None = None  # default: $MEDFM_CACHE/<dataset>/<backbone>-...-<fingerprint>.zarr
    format: Literal["zarr", "h5"] = "zarr"
    tokens: bool = False
    layers: int | None = Field(None, ge=1)  # feature of the last k blocks, concatenated [1: the model's output]
    batch_size: BatchSize = 64  # images per forward pass, or 'auto' (GPU: largest that fits; CPU: 64)
    num_workers: int | None = Field(None, ge=0)
    device: str = "auto"
    compile: bool = False  # torch.compile the backbone's forward pass (same features, faster on GPU after a warm-up)
    dtype: Literal["float16", "float32"] = "float16"
    resume: bool = True
    chunk_rows: int | None = Field(None, ge=1)  # rows per resumable chunk [auto: <= 1024 rows, <= 32 MB]
    skip_bad: bool = False  # drop rows with a missing/unreadable file or unknown label, listing each on the log
    pixels: str | None = None  # pixel cache to read: PATH, 'none', or None = a matching one under $MEDFM_CACHE if present


class PrepareConfig(_Config):
    SECTION: ClassVar[str] = "prepare"
    dataset: str
    size: int = Field(256, ge=16)  # side of the stored RGB squares (shorter side -> size, centre crop)
    data_root: str | None = None
    out: str | None = None  # default: $MEDFM_CACHE/<dataset>/pixels-<size>px-<fingerprint>.zarr
    workers: int | None = Field(None, ge=0)  # decoding processes [auto: the CPU count, at most 8]
    chunk_rows: int | None = Field(None, ge=1)  # rows per resumable chunk [auto: a power of two, <= ~8 MB]
    compress: Literal["none", "lz4", "zstd"] = "none"  # chunk codec: none reads fastest, zstd is smallest on disk
    split_seed: int = 0
    skip_bad: bool = False
    resume: bool = True


class ProbeConfig(_Config):
    SECTION: ClassVar[str] = "probe"
    cache: str
    head: str = "linear"
    metric: str | None = None  # default: the dataset's headline metric
    out: str | None = None
    seed: int = 0
    lrs: list[float] = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]
    wds: list[float] = [0.0, 1e-5, 1e-4, 1e-3, 1e-2]
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(1024, ge=1)
    min_steps: int = Field(200, ge=1)  # linear head: at least this many steps, so tiny label budgets converge
    normalize: Literal["standard", "l2", "none"] = "standard"
    class_weight: bool = False
    device: str = "auto"
    overwrite: bool = False
    results: str | None = None  # results store (SQLite) to append to [$MEDFM_RUNS/results.sqlite]
    fraction: float = Field(1.0, gt=0, le=1)  # label budget: stratified share of train (>= 1 per class), drawn with `seed`
    ks: list[int] = [10, 20, 50, 100, 200]  # knn head: k values swept, best on val
    temperature: float = Field(0.07, gt=0)  # knn head: weight of a neighbour = exp(cosine / temperature)
    head_depth: int = Field(12, ge=1, le=12)  # deit head: DeiT-B blocks kept
    deit_weights: str | None = None  # deit head: ImageNet DeiT-B checkpoint (timm keys); None = random init
    head_lr: float = Field(1e-4, gt=0)  # deit head: AdamW learning rate
    head_batch_size: int = Field(64, ge=1)  # deit head: mini-batch size
    bootstrap: int = Field(1000, ge=0)  # test-set bootstrap resamples for the 95% CI (0 = none)
    store_predictions: bool = True  # keep per-sample test scores in the record (ROC curves, pooled CIs in reports)


class SweepConfig(_Config):
    SECTION: ClassVar[str] = "sweep"
    preset: str | None = None  # a named grid (`medfm sweep --list-presets`); explicit lists below override it
    backbones: list[str] = []
    datasets: list[str] = []
    heads: list[str] = []  # [linear]
    fractions: list[float] = []  # label budgets [1.0]
    seeds: list[int] = []  # [0]
    weights: dict[str, str] = {}  # backbone -> checkpoint PATH or 'random' (others: official weights)
    data_root: str | None = None
    img_size: ImgSizes = Field(None, description="input size: one for every backbone (64), or per backbone "
                                                  "(dinov2_vits14=56,mobilenetv2=64; others: their default) [each backbone's default]")
    grey: Literal["repeat", "red"] = Field("repeat", description="grey images: repeated to RGB, or through the stem's red filter only")
    tokens: bool | None = None  # store patch tokens [auto: when a head needs them]
    extract_batch_size: BatchSize = Field(64, description="images per forward pass when extracting, or 'auto'")
    keep_going: bool = Field(False, description="a row that fails is recorded (with its error) and the sweep goes on; "
                                                "the summary lists the failures and the exit status is 2")
    device: str = "auto"
    results: str | None = None  # results store [$MEDFM_RUNS/results.sqlite]
    out: str | None = None  # folder of per-row run folders (probes and fine-tunes) [$MEDFM_RUNS/sweep/<name>]
    probe: dict = {}  # any `medfm probe` setting applied to every probe (epochs, head_depth, bootstrap, ...)
    scenarios: list[Literal["frozen", "unfrozen"]] = []  # frozen: probe rows; unfrozen: fine-tune rows [preset's, else frozen]
    unfreeze: list[int | Literal["all"]] = []  # unfrozen rows: last N blocks trained, a row per value [preset's, else all]
    finetune: dict = {}  # any `medfm finetune` setting applied to every fine-tune (epochs, lr, batch_size, ...)
    plan_only: bool = False  # print the plan (and what is done) without running anything


class ReportConfig(_Config):
    SECTION: ClassVar[str] = "report"
    results: str | None = None  # results store to read [$MEDFM_RUNS/results.sqlite]
    out: str = "medfm-report"
    bootstrap: int = Field(1000, ge=0)  # resamples for the seed-pooled 95% CI
    kind: Literal["probe", "finetune"] | None = Field(None, description="only probe or finetune rows")
    dataset: list[str] = Field([], description="only these datasets (repeatable)")
    fraction: list[float] = Field([], description="only these label budgets (repeatable)")
    where: list[str] = Field([], description="only rows whose run identity has FIELD=VALUE, e.g. backbone=mobilenetv2, "
                                             "weights=random, img_size=224, unfreeze=2/12 (repeatable; one field several "
                                             "times = any of its values)")
