"""``--norm dataset``: normalise with the train split's own per-channel mean/std (study 1's recipe);
``--norm protocol``: with the values a dataset's protocol declares (study 1's own numbers, for its datasets).

Study 1 normalises every dataset with its own statistics (``defaults/datasets.py`` class attributes
``mean``/``std``, e.g. CheXpert ``(0.503,)``; grey datasets have one channel for its 1-channel stem).
medfm computes them instead of copying numbers: the mean and (population) std of every pixel of
the TRAIN split's images after the resize policy (padding included, unnormalised, in [0, 1]), per
channel; with ``--grey red`` one channel (the grey image's, which the red filter sees). Val and test
use the train statistics.

They are computed once and kept in a JSON sidecar under ``$MEDFM_CACHE/<dataset>/norm-<key>.json``,
keyed by the dataset's identity (content + split) and the geometry (policy, sizes, interpolation,
channels), so an extract and a fine-tune of the same dataset and preprocessing share one computation.
The values then replace the backbone's mean/std in its ``data_config``: they are in the cache
fingerprint, the cache metadata and the run identity like any other preprocessing setting.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import replace
from pathlib import Path

import torch

from medfm.backbones.preprocess import MINMAX, RESIZE_POLICIES
from medfm.errors import MedfmError

STATS_VERSION = 1
GEOMETRY_KEYS = ("input_size", "interpolation", "crop_pct", "crop_mode", "resize_mode")


def stats_workers(requested: int | None) -> int:
    """Decoding workers for the statistics pass: the run's --num-workers, else extract's CPU default."""
    from medfm.extract.loader import default_workers

    return requested if requested is not None else default_workers(torch.device("cpu"))


def stats_key(spec, dataset) -> dict:
    """What the statistics depend on: dataset content and split, and the pixels the model is fed."""
    if RESIZE_POLICIES.get(spec.policy_name).own:  # the library's transform: its data_config geometry
        geometry = {"loader": spec.entry.loader, **{k: spec.data_config.get(k) for k in GEOMETRY_KEYS}}
    else:
        geometry = spec.resize_identity()
    return {"version": STATS_VERSION, "dataset": dataset.identity, "split": "train", "geometry": geometry,
            "channels": 1 if spec.grey == "red" else 3}


def stats_path(dataset, digest: str) -> Path:
    from medfm.paths import cache_root

    return cache_root() / dataset.name / f"norm-{digest[:16]}.json"


def compute_stats(spec, split, channels: int, workers: int = 0, batch_size: int = 64) -> dict:
    """Per-channel mean and population std of the split's unnormalised model inputs (float64 sums)."""
    from torchvision import transforms

    from medfm.backbones import image_transform, to_rgb
    from medfm.extract.loader import make_loader

    unit = replace(spec, data_config={**spec.data_config, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)})
    tf = transforms.Compose([to_rgb, image_transform(unit)])  # the model input with mean 0 / std 1: pixels in [0, 1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    count = 0
    for images, _, errors in make_loader(split, tf, list(range(len(split))), batch_size, workers, torch.device("cpu")):
        if errors:
            raise MedfmError(f"--norm dataset cannot read {errors[0]}", "fix or remove that file, then rerun")
        x = images[:, :channels].double()
        total += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    if not count:
        raise MedfmError("--norm dataset needs train images, and the train split is empty", "use --norm backbone")
    mean = total / count
    std = (squares / count - mean * mean).clamp_min(0).sqrt()
    return {"mean": mean.tolist(), "std": std.tolist(), "images": len(split), "pixels_per_channel": count}


def dataset_stats(spec, dataset, workers: int = 0, say=None) -> dict:
    """The train statistics for this dataset and preprocessing: read from the sidecar, or computed and stored."""
    from medfm.cache.fingerprint import fingerprint

    key = stats_key(spec, dataset)
    digest = fingerprint(key)
    path = stats_path(dataset, digest)
    if path.is_file():
        try:
            record = json.loads(path.read_text())
            if record.get("key_sha256") == digest and _well_formed(record, key["channels"]):
                return record
        except (OSError, ValueError, AttributeError):
            pass  # unreadable, truncated or not these statistics: recomputed and replaced below
    if "train" not in dataset.splits:
        raise MedfmError(f"--norm dataset needs a train split; {dataset.name} has {', '.join(dataset.splits)}",
                         "use --norm backbone")
    if say:
        say(f"computing --norm dataset statistics on {len(dataset.splits['train'])} train images -> {path}")
    record = {"key_sha256": digest, "key": key, **compute_stats(spec, dataset.splits["train"], key["channels"], workers),
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    _write_atomically(path, json.dumps(record, indent=1, default=str))
    return record


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file of this process and thread, then rename it over ``path``: a run
    computing the same statistics at the same time reads the old file or a whole new one, never half of one.
    A full disk is one error and leaves no temporary file behind."""
    from medfm.cache.store import disk_full_error, is_disk_full

    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise disk_full_error(path, " (the --norm dataset statistics)") from None
        raise MedfmError(f"cannot write the --norm dataset statistics {path}: {exc.strerror or exc}",
                         "make $MEDFM_CACHE writable (or point it elsewhere), then rerun") from None


def with_norm(spec, dataset, norm: str, dataset_spec: str, workers: int = 0, say=None):
    """``spec`` normalised as ``--norm`` asks: ``backbone`` (unchanged), ``dataset`` (the train split's statistics)
    or ``protocol`` (the values the dataset's protocol declares, ``dataset_spec`` naming it, e.g.
    ``chexpert:study1_code``)."""
    if norm == "dataset":
        return with_dataset_norm(spec, dataset, workers, say)
    if norm == "protocol":
        return with_protocol_norm(spec, dataset_spec)
    if norm != "backbone":
        raise MedfmError(f"--norm {norm!r} is not a normalisation", "use backbone, dataset or protocol")
    return spec


def with_protocol_norm(spec, dataset_spec: str):
    """``spec`` whose mean/std are those the dataset's protocol declares (study 1's hard-coded class attributes).

    Study 1's grey datasets declare one channel, for its 1-channel stem: with ``--grey red`` it is what the red
    filter sees; with ``--grey repeat`` the same value normalises each of the three identical channels."""
    from medfm.data import looks_like_path, lookup_entry, parse_spec, resolve_protocol

    name, protocol, options = parse_spec(dataset_spec)
    proto = None if looks_like_path(name) else resolve_protocol(lookup_entry(name), protocol, options)[0]
    if proto is None or proto.norm is None:
        declaring = _declaring_protocols()
        raise MedfmError(f"--norm protocol: {dataset_spec} declares no normalisation statistics",
                         f"use --norm dataset (its train split's own) or backbone; protocols that declare them: "
                         f"{', '.join(declaring)}")
    _reject_minmax(spec, "protocol")
    mean, std, code = proto.norm
    if spec.grey != "red" and len(mean) not in (1, 3) or spec.grey == "red" and len(mean) != 1:
        raise MedfmError(f"--norm protocol: {dataset_spec} declares {len(mean)}-channel statistics, which do not fit "
                         f"--grey {spec.grey}", "use --norm dataset")
    norm = {"kind": "protocol", "protocol": f"{name}:{proto.name}", "code": code, "channels": len(mean),
            "mean": list(mean), "std": list(std)}
    if len(mean) == 1:
        mean, std = mean * 3, std * 3
    return replace(spec, data_config={**spec.data_config, "mean": tuple(mean), "std": tuple(std), "norm": norm})


def _declaring_protocols() -> list[str]:
    from medfm.data.zoo import DATASETS

    return [f"{n}:{p.name}" for n in DATASETS for p in DATASETS.get(n).protocols if p.norm is not None]


def _reject_minmax(spec, mode: str) -> None:
    if spec.data_config.get("normalize") == MINMAX:
        raise MedfmError(f"--norm {mode} replaces a mean/std normalisation, but {spec.entry.name} min-max scales "
                         "each image (its authors' preprocessing)", f"drop --norm {mode} for this backbone")


def _well_formed(record: dict, channels: int) -> bool:
    """Whether a sidecar holds ``channels`` finite means and positive-or-zero stds (a hand-edited or foreign file
    does not count)."""
    values = [record.get("mean"), record.get("std")]
    return all(isinstance(v, list) and len(v) == channels and all(isinstance(x, (int, float)) and math.isfinite(x)
                                                                 for x in v) for v in values) and min(values[1]) >= 0


def with_dataset_norm(spec, dataset, workers: int = 0, say=None):
    """``spec`` whose mean/std are the train split's (recorded under ``data_config['norm']``)."""
    _reject_minmax(spec, "dataset")
    stats = dataset_stats(spec, dataset, workers, say)
    if min(stats["std"]) <= 0:
        raise MedfmError(f"--norm dataset: a channel of {dataset.name}'s train images is constant (std 0)",
                         "use --norm backbone")
    mean, std = stats["mean"], stats["std"]
    if len(mean) == 1:  # --grey red: G and B are zeroed after normalising, the red filter sees this channel
        mean, std = mean * 3, std * 3
    norm = {"kind": "dataset", "split": "train", "channels": len(stats["mean"]), "images": stats["images"],
            "mean": stats["mean"], "std": stats["std"]}
    return replace(spec, data_config={**spec.data_config, "mean": tuple(mean), "std": tuple(std), "norm": norm})
