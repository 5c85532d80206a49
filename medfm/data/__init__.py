"""Datasets: ``create_dataset(name_or_path)`` is the one door.

``name_or_path`` is a registry name (``pneumoniamnist``, ``pneumoniamnist_224``, ``busi``) found
under the data root, or a path: a CSV manifest, a folder holding ``labels.csv``, or an image
folder with one sub-folder per class.

A registry name may select a protocol and options: ``NAME[:PROTOCOL][?KEY=VALUE&...]``, e.g.
``chexpert:official?uncertain=ignore&frontal=true``. The protocol and its options are part of the
dataset identity (so of every cache fingerprint), and so is the sha256 of the split file.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import replace
from pathlib import Path

from medfm.data.base import SPLITS, Dataset, Split
from medfm.data.duplicates import POLICIES, REGISTRY_DEFAULT, USER_DEFAULT, summary_note
from medfm.data.manifest import build_dataset, folder_rows, read_csv_rows, read_manifest
from medfm.data.medmnist import read_medmnist
from medfm.data.splits import split_table
from medfm.data import study1, study3  # noqa: F401 - register the studies' own loaders in LAYOUTS
from medfm.data.studies import LAYOUTS, LoadContext
from medfm.data.zoo import DATASETS, DatasetEntry, Protocol
from medfm.errors import MedfmError
from medfm.metrics import check_metric_for_task
from medfm.paths import require_data_root
from medfm.ui import console

MEDMNIST_SIZE = re.compile(r"^(?P<base>[a-z]+mnist)_(?P<size>64|128|224)$")


def _read_medmnist(ctx: LoadContext) -> Dataset:
    e = ctx.entry
    return read_medmnist(ctx.path, e.name, e.task, list(e.classes), e.headline_metric, ctx.duplicates)


def _read_manifest(ctx: LoadContext) -> Dataset:
    e = ctx.entry
    classes = list(e.classes) if e.classes else None
    ds = build_dataset(e.name, ctx.path.parent, read_csv_rows(ctx.path), ctx.path, classes, e.headline_metric, ctx.seed,
                       skip_bad=ctx.skip_bad, check_images=ctx.check_images, duplicates=ctx.duplicates,
                       rehash=ctx.rehash, allow_missing_class=ctx.allow_missing_class)
    ds.identity["file"] = ctx.path.name
    return ds


READERS = {"medmnist": _read_medmnist, "manifest": _read_manifest, **LAYOUTS}


def parse_spec(spec: str) -> tuple[str, str | None, dict[str, str]]:
    """``NAME[:PROTOCOL][?K=V&K=V]`` -> (name, protocol or None, options)."""
    base, _, query = spec.partition("?")
    name, _, protocol = base.partition(":")
    options = {}
    for part in filter(None, query.split("&")):
        key, eq, value = part.partition("=")
        if not eq or not key:
            raise MedfmError(f"dataset option {part!r} in {spec!r} is not KEY=VALUE", "write e.g. chexpert:official?frontal=true")
        options[key.strip()] = value.strip()
    return name, protocol or None, options


def resolve_protocol(entry: DatasetEntry, protocol: str | None, options: dict[str, str]) -> tuple[Protocol | None, dict]:
    """The protocol (default: the entry's first) and its full options, user options checked against the entry."""
    if not entry.protocols:
        if protocol or options:
            raise MedfmError(f"dataset {entry.name!r} has no protocols or options", f"use plain --dataset {entry.name}")
        return None, {}
    by_name = {p.name: p for p in entry.protocols}
    if protocol is not None and protocol not in by_name:
        raise MedfmError(f"dataset {entry.name!r} has no protocol {protocol!r}",
                         f"choose one of {', '.join(f'{entry.name}:{p}' for p in by_name)}")
    proto = by_name[protocol] if protocol else entry.protocols[0]
    if proto.fixed and options:
        raise MedfmError(f"protocol {entry.name}:{proto.name} takes no options ({', '.join(options)} given): "
                         "it reads the dataset exactly as the study's code did", f"use plain {entry.name}:{proto.name}")
    if proto.fixed:
        return proto, {}
    allowed = dict(entry.options)
    for key, value in options.items():
        if key not in allowed:
            raise MedfmError(f"dataset {entry.name!r} has no option {key!r}",
                             f"options: {', '.join(allowed) or 'none'} (`medfm datasets` lists them)")
        ok = value.isdigit() if allowed[key] == ("<int>",) else value in allowed[key]
        if not ok:
            raise MedfmError(f"dataset option {key}={value!r} is not allowed for {entry.name}",
                             f"choose {'a whole number >= 0' if allowed[key] == ('<int>',) else ' or '.join(allowed[key])}")
    return proto, {**dict(proto.options), **options}


def looks_like_path(name: str) -> bool:
    return "/" in name or name.endswith(".csv") or name.startswith((".", "~"))


def lookup_entry(name: str) -> DatasetEntry:
    m = MEDMNIST_SIZE.match(name)
    if m and m["base"] in DATASETS and name not in DATASETS:
        base = DATASETS.get(m["base"])
        return replace(base, name=name, location=f"{name}.npz")
    return DATASETS.get(name)


def create_dataset(name_or_path: str, data_root: str | Path | None = None, seed: int = 0, metric: str | None = None,
                   skip_bad: bool = False, check_images: bool | None = None, *, duplicates: str | None = None,
                   rehash: bool = False, allow_missing_class: bool = False) -> Dataset:
    """Read a dataset (registry name or path) with its splits; ``seed`` drives any split medfm makes.

    ``skip_bad`` drops rows whose file is missing/unreadable or whose label is unknown, listing each
    on the log and in ``Dataset.skipped``; without it the first such row is an error naming it.
    ``duplicates`` is the policy for identical images under two names (``data/duplicates.py``;
    None: ``error`` for a path, ``warn`` for a registry dataset, kept as published); ``rehash``
    reads every image again for the content identity; ``allow_missing_class`` lets a class that
    training does not see through (recorded in the identity).
    """
    if seed < 0:
        raise MedfmError(f"--split-seed {seed} is negative", "give a whole number >= 0")
    if duplicates is not None and duplicates not in POLICIES:
        raise MedfmError(f"--duplicates {duplicates!r} is not a policy", f"choose {', '.join(POLICIES)}")
    checks = {"rehash": rehash, "allow_missing_class": allow_missing_class}
    if looks_like_path(name_or_path) or (Path(name_or_path).exists() and name_or_path not in DATASETS):
        checks["duplicates"] = duplicates or USER_DEFAULT
        ds = _from_path(Path(name_or_path).expanduser(), seed, skip_bad, check_images, checks)
    else:
        name, protocol, options = parse_spec(name_or_path)
        entry = lookup_entry(name)
        proto, options = resolve_protocol(entry, protocol, options)
        reader = (proto and proto.reader) or entry.reader  # a protocol may read the files its own way
        path = require_data_root(data_root) / ((proto and proto.location) or entry.location)
        if not path.exists() and reader != "medmnist":
            what = f"protocol {proto.name}: {proto.description}" if proto and proto.location else entry.description
            raise MedfmError(f"{path} not found ({what})",
                             "pass --data-root DIR holding the dataset as downloaded, or set MEDFM_DATA")
        ds = READERS[reader](LoadContext(entry, path, options, seed, skip_bad, check_images=check_images,
                                         duplicates=duplicates or REGISTRY_DEFAULT, **checks))
        if proto is not None and proto.headline_metric:
            ds.headline_metric = proto.headline_metric
        head = {"name": entry.name}
        if proto is not None:
            head.update(protocol=proto.name, options=options)
            if proto.headline_metric:  # the protocol's own scoring (e.g. study 1's AUC), shown wherever the identity is
                head["protocol_metric"] = proto.headline_metric
            if proto is not entry.protocols[0]:
                ds.name = f"{entry.name}:{proto.name}"
            ds.notes.insert(0, f"protocol {proto.name}: {proto.description}")
        ds.identity = {**head, **ds.identity}
        ds.source = str(path)
    ds.identity["split_sha256"] = hashlib.sha256(split_table(ds)).hexdigest()
    for line in ds.skipped:
        console.print(f"[yellow]skipped[/] {line}")
    if ds.identity.get("duplicates"):
        console.print(f"[yellow]duplicates[/] {ds.name}: {summary_note(ds.identity['duplicates'])}; "
                      f"`medfm datasets inspect {name_or_path}` lists them")
    if metric:
        check_metric_for_task(metric, ds.task)
        ds.headline_metric = metric
    return ds


def _from_manifest(name: str, manifest: Path, seed: int, skip_bad: bool, check_images: bool | None, checks: dict) -> Dataset:
    rows, label_columns = read_manifest(manifest)
    return build_dataset(name, manifest.parent, rows, manifest, label_columns, seed=seed, skip_bad=skip_bad,
                         task="multilabel" if label_columns else None, check_images=check_images, **checks)


def _from_path(path: Path, seed: int, skip_bad: bool, check_images: bool | None, checks: dict) -> Dataset:
    if path.is_file() and path.suffix.lower() == ".csv":
        ds = _from_manifest(path.parent.name, path, seed, skip_bad, check_images, checks)
    elif path.is_dir() and (path / "labels.csv").is_file():
        ds = _from_manifest(path.name, path / "labels.csv", seed, skip_bad, check_images, checks)
    elif path.is_dir():
        ds = build_dataset(path.name, path, folder_rows(path), None, seed=seed, skip_bad=skip_bad, check_images=check_images,
                           **checks)
    else:
        raise MedfmError(
            f"dataset path {path} does not exist" if not path.exists() else f"{path} is neither a CSV manifest nor a folder",
            "give a registry name (`medfm datasets`), a CSV manifest (path,label[,split]) or an image folder",
        )
    ds.source = str(path.resolve())
    return ds


__all__ = ["DATASETS", "SPLITS", "Dataset", "Split", "create_dataset"]
