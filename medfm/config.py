"""Run configurations: every CLI option is a key here, and a run saves the config it ran with.

A config file (JSON or YAML) may hold the keys of one command flat, or sections named after the
commands (``extract:``, ``probe:``); options given on the command line override the file. Rerunning
a saved ``config.json`` with ``--config`` reproduces the run (kaiko eva does the same).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

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


class ExtractConfig(_Config):
    SECTION: ClassVar[str] = "extract"
    backbone: str
    dataset: str
    weights: str | None = None  # PATH, 'random', or None/'pretrained' for the official weights
    data_root: str | None = None
    cache: str | None = None  # default: $MEDFM_CACHE/<dataset>/<backbone>-...-<fingerprint>.zarr
    format: Literal["zarr", "h5"] = "zarr"
    tokens: bool = False
    feature: str | None = None  # default: the backbone's (the studies') pooled feature
    img_size: int | None = Field(None, ge=16)
    layers: int | None = Field(None, ge=1)  # feature of the last k blocks, concatenated [1: the model's output]
    batch_size: int = Field(64, ge=1)
    num_workers: int | None = Field(None, ge=0)
    device: str = "auto"
    dtype: Literal["float16", "float32"] = "float16"
    split_seed: int = 0
    resume: bool = True
    chunk_rows: int | None = Field(None, ge=1)  # rows per resumable chunk [auto: <= 1024 rows, <= 32 MB]
    skip_bad: bool = False  # drop rows with a missing/unreadable file or unknown label, listing each on the log


class ProbeConfig(_Config):
    SECTION: ClassVar[str] = "probe"
    cache: str
    head: str = "linear"
    metric: str | None = None  # default: the dataset's headline metric
    out: str | None = None
    seed: int = 0
    lrs: list[float] = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1]
    wds: list[float] = [0.0, 1e-5, 1e-4, 1e-3, 1e-2]
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(256, ge=1)
    normalize: Literal["standard", "l2", "none"] = "standard"
    class_weight: bool = False
    device: str = "auto"
    overwrite: bool = False
    results: str | None = None  # results store (SQLite) to append to [$MEDFM_RUNS/results.sqlite]
