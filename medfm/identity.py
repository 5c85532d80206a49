"""A run's identity: everything that decides the number a result row holds, except the seed.

Rows with the same identity are the same experiment repeated over seeds, so ``medfm report``
averages them; rows whose identities differ in anything (weights, image size, grey mode, feature,
layers, head settings, unfreeze depth, fine-tune settings, label budget, dataset content, ...) are
different experiments and are never averaged. Every probe and fine-tune stores its identity in the
record (``identity`` and its hash ``identity_sha256``).

Rows written before identities existed get one derived from what they recorded, marked
``identity_version: 0``: they group only with other old rows that recorded the same values, and
the report says how many there are and what they did not record.
"""

from __future__ import annotations

from medfm.cache.fingerprint import fingerprint

IDENTITY_VERSION = 1
SEED_FIELDS = ("seed",)
# probe settings that do not change the headline number (where a run writes, how its CI is drawn) or
# are identity fields of their own
PROBE_NOT_SETTINGS = ("cache", "out", "results", "overwrite", "device", "seed", "bootstrap", "store_predictions",
                      "head", "fraction", "metric")
# fine-tune settings that are identity fields of their own (the rest of the run key's settings are the
# fine-tune's settings; where it writes and how it is launched are in neither)
FINETUNE_OWN_FIELDS = ("backbone", "dataset", "weights", "img_size", "feature", "split_seed", "head", "fraction",
                       "unfreeze", "metric", "seed", "grey", "resize", "resize_size", "norm",
                       "out", "results", "overwrite", "resume", "device", "num_workers", "data_root", "save_model",
                       "drop_cutoff", "tokens_from")  # backbone fields (in its identity when set)
GREY_BY_CHANNELS = {"grey repeated to RGB": "repeat", "grey through the stem's red-channel filter only (1-channel stem)": "red"}
# what the old rows of a store did not record (the report names them)
NOT_IN_OLD_ROWS = ("grey mode", "layers", "dataset content", "head settings other than the chosen grid")


def _weights(w: dict) -> tuple[str, str | None]:
    return ("random" if w.get("kind") == "random" else "file"), w.get("sha256")


def _backbone_fields(bb: dict) -> dict:
    """The fields a backbone identity (``BackboneSpec.identity()``, also a cache's ``meta['backbone']``) decides."""
    weights, sha = _weights(bb.get("weights", {}))
    pre = bb.get("preprocessing", {})
    return {
        "backbone": bb["name"] + (f":{bb['tag']}" if bb.get("tag") else ""),
        "weights": weights,
        "weights_sha256": sha,
        "feature": bb.get("feature"),
        "layers": int(bb.get("layers", {}).get("last", 1)),
        "img_size": int(pre["input_size"][-1]) if pre.get("input_size") else None,
        "grey": GREY_BY_CHANNELS.get(pre.get("channels"), pre.get("channels")),
        **_preprocessing_fields(pre),
    } | ({"drop_cutoff": bb["drop_cutoff"]} if bb.get("drop_cutoff") is not None else {})  # absent unset: hashes kept


def preprocessing_record(pre: dict) -> dict:
    """What a run record says about its preprocessing, from a backbone identity's ``preprocessing``."""
    return {"resize": pre.get("resize", {"policy": "crop"}), "norm": pre.get("norm", "backbone"),
            "mean": list(pre.get("mean") or []), "std": list(pre.get("std") or []), "channels": pre.get("channels")}


def _preprocessing_fields(pre: dict) -> dict:
    """--resize and --norm, present only when not the defaults (crop, backbone): rows made before they
    existed keep their identity. The policy's sizes and the statistics are in the cache fingerprint."""
    fields = {}
    if pre.get("resize"):
        r = pre["resize"]
        fields["resize"] = r["policy"] + (f"{r['resize_size']}" if r.get("resize_size") else "")
    if pre.get("norm"):
        fields["norm"] = pre["norm"].get("kind", "dataset")
    return fields


def probe_identity(settings: dict, cache_meta: dict, metric: str, head_reads_tokens: bool) -> dict:
    """The identity of a probe: the cache's inputs (dataset content, backbone, weights, preprocessing, ...),
    the head and its settings, the metric that chose them, the label budget."""
    inputs = cache_meta.get("fingerprint_inputs", {})
    extract = cache_meta.get("extract", {})
    tokens = (extract.get("tokens_from") or "output") if head_reads_tokens else None
    return {
        "identity_version": IDENTITY_VERSION,
        "kind": "probe",
        "dataset": cache_meta["dataset"]["name"],
        "dataset_sha256": fingerprint(inputs["dataset"]) if "dataset" in inputs else None,
        "metric": metric,
        **_backbone_fields(cache_meta["backbone"]),
        "tokens": tokens,
        "dtype": inputs.get("dtype"),
        "pixels": (inputs.get("pixels") or {}).get("size"),
        "head": settings["head"],
        "head_settings": {k: v for k, v in settings.items() if k not in PROBE_NOT_SETTINGS},
        "fraction": float(settings["fraction"]),
        "unfreeze": None,
        "blocks": None,
        "finetune": None,
    }


def finetune_identity(settings: dict, dataset: str, dataset_identity: dict, backbone_identity: dict, metric: str,
                      unfreeze: int, blocks: int, head_reads_tokens: bool) -> dict:
    """The identity of a fine-tune: dataset content, backbone and weights, the depth trained (as a number of
    blocks: 'all' and the block count are the same run), the head and every training setting."""
    ft = {k: v for k, v in settings.items() if k not in FINETUNE_OWN_FIELDS}
    head_keys = ("head_depth", "deit_weights", "head_lr")
    return {
        "identity_version": IDENTITY_VERSION,
        "kind": "finetune",
        "dataset": dataset,
        "dataset_sha256": fingerprint(dataset_identity),
        "metric": metric,
        **_backbone_fields(backbone_identity),
        "tokens": (backbone_identity.get("tokens_from", "tokens") if head_reads_tokens else None),
        "dtype": None,
        "pixels": None,
        "head": settings["head"],
        "head_settings": {k: ft.pop(k) for k in head_keys if k in ft},
        "fraction": float(settings["fraction"]),
        "unfreeze": unfreeze,  # blocks trained ('all' is stored as the block count: the same run)
        "blocks": blocks,
        "finetune": ft,
    }


def derived_identity(record: dict) -> dict:
    """An identity for a row stored before identities existed: what the record holds, nothing guessed.

    Probe rows carry their cache fingerprint, which fixes dataset content, backbone, weights, feature,
    layers, image size and grey mode; their head settings are known only as far as the chosen values and
    the grid they were chosen from are recorded. Fine-tune rows carry their training settings."""
    kind = record.get("kind", "probe")
    weights = "random" if str(record.get("weights", "")).startswith("random") else "file"
    grid = sorted({k for g in record.get("grid", []) for k in g if k != "val"})
    head_settings = {k: sorted({g[k] for g in record.get("grid", []) if k in g}) for k in grid}
    return {
        "identity_version": 0,
        "kind": kind,
        "dataset": record["dataset"],
        "dataset_sha256": None,
        "metric": record["headline_metric"]["name"],
        "backbone": record["backbone"],
        "weights": weights,
        "weights_sha256": record.get("weights_sha256"),
        "feature": record.get("feature"),
        "layers": None,
        "img_size": record.get("img_size"),
        "grey": None,
        "tokens": None,
        "dtype": None,
        "pixels": None,
        "cache_fingerprint": record.get("cache_fingerprint"),
        "head": record["head"],
        "head_settings": head_settings,
        "fraction": float(record.get("fraction", 1.0)),
        "unfreeze": record.get("unfreeze") if kind == "finetune" else None,
        "blocks": record.get("blocks") if kind == "finetune" else None,
        "finetune": record.get("hyperparameters") if kind == "finetune" else None,
    }


def identity_of(record: dict) -> dict:
    """The row's stored identity, or one derived from an old row."""
    return record.get("identity") or derived_identity(record)


def identity_sha256(identity: dict) -> str:
    return fingerprint({k: v for k, v in identity.items() if k not in SEED_FIELDS})


def with_identity(record: dict, identity: dict) -> dict:
    """``record`` with its identity and the identity's hash (the report's group key) added."""
    record["identity"] = identity
    record["identity_sha256"] = identity_sha256(identity)
    return record


# ---- labels: only what distinguishes a group from the others in the same report ----

def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list):
        return ",".join(_fmt(x) for x in v)
    return str(v)


def flat_identity(identity: dict) -> dict:
    """Identity fields, the settings mappings spread into ``head_settings.k`` / ``finetune.k``."""
    flat = {}
    for k, v in identity.items():
        if isinstance(v, dict):
            flat.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            flat[k] = v
    return flat


# identity field -> how a label shows it (fields shown as report columns are not in labels; fields with no
# token here, such as dataset content, make two labels equal: the report then adds the identity's hash)
_BACKBONE_TOKENS = {
    "weights": lambda v, i: "(random init)" if v == "random" else None,
    "weights_sha256": lambda v, i: f"(weights {v[:8]})" if v and i.get("weights") != "random" else None,
    "img_size": lambda v, i: f"@{v}" if v is not None else None,
    "feature": lambda v, i: f"[{v}]" if v else None,
    "layers": lambda v, i: f"last{v}" if v is not None else None,
    "drop_cutoff": lambda v, i: f"block{v}" if v is not None else None,
    "grey": lambda v, i: f"grey={v}" if v else None,
    "resize": lambda v, i: f"resize={v}" if v else None,
    "norm": lambda v, i: f"norm={v}" if v else None,
    "dtype": lambda v, i: v,
    "pixels": lambda v, i: f"pixels{v}" if v else None,
    "tokens": lambda v, i: f"tokens={v}" if v else None,
    "unfreeze": lambda v, i: f"u{v}" if v is not None else None,
    "identity_version": lambda v, i: "(old row)" if v == 0 else None,
}
COLUMN_FIELDS = ("kind", "dataset", "metric", "fraction", "backbone", "head")


def distinguishing_fields(identities: list[dict]) -> list[str]:
    """The identity fields (flattened) whose values differ among ``identities`` (compare rows of one kind:
    probe and fine-tune identities have different settings)."""
    flats = [flat_identity(i) for i in identities]
    keys = sorted({k for f in flats for k in f})

    def varies(k: str) -> bool:
        # checkpoints differ only among rows that load one (random init has none: its own token says so)
        among = [f for f in flats if f.get("weights") != "random"] if k == "weights_sha256" else flats
        return len({fingerprint({"v": f.get(k)}) for f in among}) > 1

    return [k for k in keys if k not in COLUMN_FIELDS and varies(k)]


def backbone_label(identity: dict, varying: list[str]) -> str:
    """``mobilenetv2 (random init)``, ``dinov2_vits14 @224``: the backbone and what sets it apart."""
    parts = [identity["backbone"]]
    for k, token in _BACKBONE_TOKENS.items():
        if k in varying and k != "unfreeze":
            t = token(identity.get(k), identity)
            if t:
                parts.append(t)
    return " ".join(parts)


def run_label(identity: dict, varying: list[str]) -> str:
    """``dinov2_vits14 @224 u2 + deit``: backbone, depth and head, each with only its distinguishing parts."""
    label = backbone_label(identity, varying)
    if "unfreeze" in varying and identity.get("unfreeze") is not None:
        label += " " + _BACKBONE_TOKENS["unfreeze"](identity["unfreeze"], identity)
    flat = flat_identity(identity)
    extra = [f"{k.split('.', 1)[1]}={_fmt(flat[k])}" for k in varying
             if k.startswith(("head_settings.", "finetune.")) and k in flat]
    return f"{label} + {identity['head']}" + (f" ({', '.join(extra)})" if extra else "")
