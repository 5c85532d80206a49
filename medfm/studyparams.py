"""``medfm run --params params.json``: the first study's config layout, mapped onto medfm's stages.

Study 1 (Mansoori et al., ``python classification.py --params_path ./params.json``) configures a
run with sections ``dataset_params``, ``dataloader_params``, ``model_params``, ``foundation_params``,
``optimization_params``, ``training_params``, ``system_params``, ... . medfm maps what has a
meaning here onto its native configs and reports every key it used (and into which setting) and
every key it ignored (and why), so nothing is silently dropped:

- frozen backbone (``foundation_params.freeze_backbone: true`` and ``partial.unfreeze_cutoff: -1``)
  -> ``extract`` + ``probe``; otherwise -> ``finetune`` (``unfreeze`` = blocks from the cutoff on).
- ``model_params.backbone_type``: ``"none"`` = linear head, ``"deit_base"`` = the DeiT attention head.
- a top-level ``"medfm"`` section (not in the study's files) may hold native keys that override the
  mapping, e.g. ``{"medfm": {"weights": "/path/ckpt.safetensors", "dataset": "chexpert:official"}}``.

``fidelity`` (``medfm.fidelity``): ``fast`` is the mapping above (medfm's cached path, its own
preprocessing and training); ``exact`` maps the file as the study's code (``STUDY1``, @02db977) runs it:
always a fine-tune (``unfreeze=0`` for frozen rows and for DeiT-head rows whose backbone the code
re-freezes), with the code's data lists, preprocessing, augmentation, schedule and warm-up; every setting
is listed with the code location it follows.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from medfm.errors import MedfmError
from medfm.fidelity import FIDELITIES, STUDY1, Row, base_name, missing_options, record_entry

# study 1's dataset names (defaults/datasets.py) -> medfm registry names
STUDY_DATASETS = {"APTOS2019": "aptos2019", "ISIC2019": "isic2019", "CheXpert": "chexpert", "DDSM": "ddsm"}
# study 1's foundation_params.backbone_type -> medfm backbone names
STUDY_BACKBONES = {
    "dinov2_vits14": "dinov2_vits14", "dinov2_vitb14": "dinov2_vitb14", "dinov2_vitl14": "dinov2_vitl14",
    "dinov2_vitg14": "dinov2_vitg14",
    "vit_base_patch16": "mae_vitb16", "vit_large_patch16": "mae_vitl16", "vit_huge_patch14": "mae_vith14",
    "sam2_b": "sam2_b", "sam2_l": "sam2_l",
    "aimv2-large-patch14-224": "aimv2_l14", "aimv2-huge-patch14-224": "aimv2_h14",
    "coca_ViT-B-32": "coca_vitb32", "coca_ViT-L-14": "coca_vitl14",
    # the code's CLIP is open_clip ViT-B-16 laion2b_s34b_b88k (utils/transformers/clip.py:L8), not OpenAI's; its
    # function is named clip_vitb16, which is OpenAI's CLIP in medfm: the study's name wins here
    "clip_ViT-B-16": "openclip_vitb16", "clip_vitb16": "openclip_vitb16", "deit_base": "deit_b",
}
STUDY_HEADS = {"none": "linear", "linear": "linear", "deit_base": "deit", "deit": "deit"}

# keys medfm knows and deliberately does not use, with the reason shown to the user
WHY_IGNORED = {
    "dataset_params.train_transforms": "fast: medfm fine-tuning uses its modality-aware augmentation, probes none "
                                       "(--fidelity exact: the study's, augment=study1)",
    "dataset_params.val_transforms": "medfm uses each backbone's own preprocessing in fast mode: shorter side to the "
                                     "input size, centre crop, the backbone's mean/std, not the study's Resize((256, "
                                     "256)) -> CenterCrop 224 with dataset statistics (--fidelity exact follows the study)",
    "dataset_params.test_transforms": "as val_transforms",
    "model_params.cnn_params": "not used by foundation-model runs",
    "model_params.transformers_params": "the head's input size follows the backbone",
    "lr_finder": "medfm's probe trains a learning-rate x weight-decay grid instead",
    "log_params": "runs are logged to the run folder and the results store",
    "system_params.use_all_GPUs": "multi-GPU fine-tuning runs under torchrun",
    "system_params.which_GPUs": "set CUDA_VISIBLE_DEVICES",
}


@dataclass
class StudyRun:
    """The native settings a params.json maps to, and the account of every key."""

    mode: str  # "probe" (extract + probe) or "finetune"
    fidelity: str = "fast"
    extract: dict = field(default_factory=dict)
    probe: dict = field(default_factory=dict)
    finetune: dict = field(default_factory=dict)
    used: dict[str, str] = field(default_factory=dict)  # params.json key -> "setting = value"
    ignored: dict[str, str] = field(default_factory=dict)  # params.json key -> why
    row: Row | None = None  # the run as the fidelity table sees it
    overrides: dict = field(default_factory=dict)  # the "medfm" section's keys (over the code's settings)

    def settings(self) -> list[dict]:
        """Exact: every setting of the study's code that concerns this run, with its code location (and the
        options it sets); fast: the settings where this mapping does something else than the code."""
        return STUDY1.departures(self.row, self.fidelity) if self.row else []

    def other_settings(self) -> list[dict]:
        """The settings of the study's code that concern other rows (CoCa tokens, CLIP weights, ...): listed too,
        so the dry-run names every setting of the table."""
        mine = {s["setting"] for s in STUDY1.departures(self.row, "exact")} if self.row else set()
        return [{"setting": s.key, "what": s.what, "exact": s.exact_text, "code": list(s.code)}
                for s in STUDY1.settings if s.key not in mine]

    def fidelity_entry(self) -> dict:
        return record_entry(self.fidelity, STUDY1, self.row, self.overrides)

    def report(self) -> dict:
        return {"mode": self.mode, "fidelity": self.fidelity, "used": self.used, "ignored": self.ignored,
                "settings": self.settings(), "other_settings": self.other_settings() if self.fidelity == "exact" else []}


def _leaves(obj, prefix=""):
    if isinstance(obj, dict) and obj:
        for k, v in obj.items():
            yield from _leaves(v, f"{prefix}.{k}" if prefix else k)
    else:
        yield prefix, obj


class _Reader:
    """Reads keys of the study's params, remembering which ones were consumed."""

    def __init__(self, params: dict, source: Path):
        self.params, self.source, self.consumed = params, source, set()

    def get(self, dotted: str, default=None):
        node = self.params
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        self.consumed.add(dotted)
        return node

    def require(self, dotted: str):
        value = self.get(dotted)
        if value is None:
            raise MedfmError(f"{self.source}: missing {dotted}", "a study-1 params.json has this key; see README 'medfm run'")
        return value

    def ignored(self) -> dict[str, str]:
        """Every leaf not consumed, collapsed to the largest wholly unused section."""
        leaves = [k for k, _ in _leaves(self.params)]

        def used(k):
            return any(k == c or k.startswith(c + ".") for c in self.consumed)

        unused = [k for k in leaves if not used(k)]
        out = {}
        for k in unused:
            parts = k.split(".")
            top = k
            for n in range(1, len(parts) + 1):
                prefix = ".".join(parts[:n])
                if not any(used(x) for x in leaves if x == prefix or x.startswith(prefix + ".")):
                    top = prefix
                    break
            if top not in out:
                out[top] = next((why for key, why in WHY_IGNORED.items() if top == key or top.startswith(key + ".")),
                                "no medfm equivalent")
        return out


def _backbone(name: str) -> str:
    from medfm.backbones import BACKBONES, is_backbone

    if name not in STUDY_BACKBONES and (name in BACKBONES or is_backbone(name)):
        return name  # a medfm name; a study name wins where both exist (the study's clip_vitb16 is open_clip's)
    mapped = STUDY_BACKBONES.get(name)
    if mapped is None:
        raise MedfmError(f"params.json foundation_params.backbone_type {name!r} is not a study-1 model medfm knows",
                         f"use one of {', '.join(STUDY_BACKBONES)} or a medfm backbone (`medfm backbones`)")
    if mapped not in BACKBONES:
        raise MedfmError(f"params.json backbone {name!r} maps to medfm backbone {mapped!r}, which this medfm's registry does "
                         "not have yet", "`medfm backbones` lists the ones available; put one in the \"medfm\" section's backbone")
    return mapped


def _dataset(name: str) -> str:
    return STUDY_DATASETS.get(name, name)


def _blocks(backbone: str, img_size: int | None) -> int:
    """Number of blocks of a backbone (architecture only, built on the meta device: no weights, no memory)."""
    import torch

    from medfm.backbones import resolve_backbone

    return len(resolve_backbone(backbone, "random", img_size, None).build(torch.device("meta")).blocks())


def map_params(path: str | Path, fidelity: str = "fast") -> StudyRun:
    if fidelity not in FIDELITIES:
        raise MedfmError(f"--fidelity {fidelity!r} is not a fidelity", f"use {' or '.join(FIDELITIES)}")
    path = Path(path)
    if not path.is_file():
        raise MedfmError(f"params file {path} not found", "check the --params path")
    try:
        params = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise MedfmError(f"{path} is not valid JSON: {exc}", "fix its syntax") from None
    if not isinstance(params, dict) or "dataset_params" not in params or "foundation_params" not in params:
        raise MedfmError(f"{path} is not a study-1 params.json (needs dataset_params and foundation_params)",
                         "for medfm's own config use `medfm run --config`")
    overrides = params.pop("medfm", {}) or {}
    r = _Reader(params, path)
    run = StudyRun(mode="probe", fidelity=fidelity, overrides=dict(overrides))

    def use(key, setting, value):
        run.used[key] = f"{setting} = {value}"
        return value

    dataset = use("dataset_params.dataset", "dataset", _dataset(r.require("dataset_params.dataset")))
    data_root = r.get("dataset_params.data_location")
    if data_root is not None:
        use("dataset_params.data_location", "data_root", data_root)
    backbone = use("foundation_params.backbone_type", "backbone",
                   overrides.get("backbone") or _backbone(r.require("foundation_params.backbone_type")))
    img_size = r.get("foundation_params.img_size")
    if img_size is not None:
        use("foundation_params.img_size", "img_size", img_size)
    pretrained = r.get("foundation_params.pretrained", True)
    weights = use("foundation_params.pretrained", "weights", None if pretrained else "random")
    head_name = r.get("model_params.backbone_type", "none")
    if head_name not in STUDY_HEADS:
        raise MedfmError(f"{path}: model_params.backbone_type {head_name!r} is not a head medfm has",
                         "use \"none\" (linear head) or \"deit_base\" (DeiT attention head)")
    head = use("model_params.backbone_type", "head", STUDY_HEADS[head_name])
    freeze = r.get("foundation_params.freeze_backbone", True)
    cutoff = r.get("foundation_params.partial.unfreeze_cutoff", -1)
    batch = r.get("dataloader_params.trainloader.batch_size")
    workers = r.get("dataloader_params.trainloader.num_workers")
    lr = r.get("optimization_params.default.optimizer.params.lr")
    wd = r.get("optimization_params.default.optimizer.params.weight_decay")
    epochs = r.get("training_params.epochs")
    use_gpu = r.get("system_params.use_GPU", True)
    device = use("system_params.use_GPU", "device", "auto" if use_gpu else "cpu")
    save_dir, model_name = r.get("training_params.save_dir"), r.get("training_params.model_name")
    out = str(Path(save_dir) / model_name) if save_dir and model_name else None

    common = {"backbone": backbone, "dataset": dataset, "weights": weights, "data_root": data_root, "img_size": img_size}
    if fidelity == "exact":
        _map_exact(r, run, use, {**common, "device": device}, head, freeze, cutoff, path)
    elif freeze and (cutoff is None or int(cutoff) < 0):
        use("foundation_params.freeze_backbone", "mode", "frozen backbone -> extract + probe")
        use("foundation_params.partial.unfreeze_cutoff", "mode", f"{cutoff} (all blocks frozen)")
        run.extract = {**common, "tokens": head == "deit", "device": device, "num_workers": workers}
        run.probe = {"head": head, "solver": "grid", "device": device, "out": out, "epochs": epochs, "batch_size": batch,
                     "lrs": [lr] if lr is not None else None, "wds": [wd] if wd is not None else None}
        for key, setting, value in (("dataloader_params.trainloader.batch_size", "probe.batch_size", batch),
                                    ("dataloader_params.trainloader.num_workers", "extract.num_workers", workers),
                                    ("optimization_params.default.optimizer.params.lr", "probe.lrs", [lr]),
                                    ("optimization_params.default.optimizer.params.weight_decay", "probe.wds", [wd]),
                                    ("training_params.epochs", "probe.epochs", epochs),
                                    ("training_params.save_dir", "probe.out", out),
                                    ("training_params.model_name", "probe.out", out)):
            if r.get(key) is not None:
                use(key, setting, value)
    else:
        run.mode = "finetune"
        if not freeze:
            unfreeze = "all"
        else:
            unfreeze = _blocks(backbone, img_size) - int(cutoff)
            if unfreeze <= 0:
                raise MedfmError(f"{path}: foundation_params.partial.unfreeze_cutoff {cutoff} is past the backbone's last block",
                                 "use -1 (frozen) or a block index of the backbone")
        use("foundation_params.freeze_backbone", "mode", "fine-tune")
        use("foundation_params.partial.unfreeze_cutoff", "finetune.unfreeze", unfreeze)
        warmup = r.get("optimization_params.default.scheduler.params.LinearWarmup.warmup_iters")
        clip = r.get("training_params.grad_clipping")
        amp = r.get("training_params.use_mixed_precision")
        run.finetune = {**common, "unfreeze": unfreeze, "head": head, "epochs": epochs, "batch_size": batch, "lr": lr,
                        "weight_decay": wd, "warmup_steps": warmup, "grad_clip": clip, "amp": amp, "device": device,
                        "num_workers": workers, "out": out}
        for key, setting, value in (("dataloader_params.trainloader.batch_size", "finetune.batch_size", batch),
                                    ("dataloader_params.trainloader.num_workers", "finetune.num_workers", workers),
                                    ("optimization_params.default.optimizer.params.lr", "finetune.lr", lr),
                                    ("optimization_params.default.optimizer.params.weight_decay", "finetune.weight_decay", wd),
                                    ("optimization_params.default.scheduler.params.LinearWarmup.warmup_iters",
                                     "finetune.warmup_steps", warmup),
                                    ("training_params.epochs", "finetune.epochs", epochs),
                                    ("training_params.grad_clipping", "finetune.grad_clip", clip),
                                    ("training_params.use_mixed_precision", "finetune.amp", amp),
                                    ("training_params.save_dir", "finetune.out", out),
                                    ("training_params.model_name", "finetune.out", out)):
            if r.get(key) is not None:
                use(key, setting, value)
    if fidelity == "fast":
        run.row = Row(backbone, base_name(dataset), head, "frozen" if run.mode == "probe" else "unfrozen",
                      run.finetune.get("unfreeze"))
    opt_type = r.get("optimization_params.default.optimizer.type")
    if opt_type is not None:
        use("optimization_params.default.optimizer.type", "optimizer",
            "AdamW (medfm's fine-tune)" if run.mode == "finetune" else "Adam grid (medfm's probe)")
    for key, value in overrides.items():
        target = run.finetune if run.mode == "finetune" else (run.extract if key in _extract_keys() else run.probe)
        target[key] = value
        run.used[f"medfm.{key}"] = f"{key} = {value}"
    run.ignored = r.ignored()
    for section in (run.extract, run.probe, run.finetune):
        for k in [k for k, v in section.items() if v is None]:
            del section[k]
    return run


def _map_exact(r: _Reader, run: StudyRun, use, common: dict, head: str, freeze: bool, cutoff, path: Path) -> None:
    """The file as the study's code runs it (``STUDY1``): always a fine-tune; the code's table for the row, then
    the file's own values where the code reads them (it overrides the warm-up by dataset, classification.py:L104-113)."""
    run.mode = "finetune"
    scenario = "frozen" if freeze and (cutoff is None or int(cutoff) < 0) else "unfrozen"
    if scenario == "frozen":
        unfreeze, how = 0, "frozen backbone -> finetune with unfreeze 0 (the head trains online, defaults/trainer.py:L63-80)"
    elif head == "deit" and freeze:
        unfreeze, how = 0, ("unfreeze 0: the DeiT-head model's forward re-freezes the backbone "
                            "(defaults/models.py:L571, L588-591; defaults/bases.py:L319-322)")
    elif not freeze:
        unfreeze, how = "all", "every block trains (freeze_backbone false: nothing re-freezes it)"
    else:
        unfreeze = _blocks(common["backbone"], common["img_size"]) - int(cutoff)
        if unfreeze <= 0:
            raise MedfmError(f"{path}: foundation_params.partial.unfreeze_cutoff {cutoff} is past the backbone's last block",
                             "use -1 (frozen) or a block index of the backbone")
        how = f"blocks {cutoff}.. train (defaults/models.py:L435-440)"
    use("foundation_params.freeze_backbone", "mode", f"{scenario} -> finetune")
    use("foundation_params.partial.unfreeze_cutoff", "finetune.unfreeze", f"{unfreeze} ({how})")
    run.row = Row(common["backbone"], base_name(common["dataset"]), head, scenario, unfreeze)
    settings = {**STUDY1.row_settings(run.row), "unfreeze": unfreeze}  # the code's table for this row
    settings["dataset"] = STUDY1.dataset_for(common["dataset"])
    use("dataset_params.dataset", "dataset", f"{settings['dataset']} (the code's lists and splits)")
    if r.get("dataloader_params.trainloader.drop_last") is not None:
        settings["drop_last"] = use("dataloader_params.trainloader.drop_last", "finetune.drop_last",
                                    bool(r.get("dataloader_params.trainloader.drop_last")))
    if r.get("dataloader_params.valloader.drop_last") is not None:
        shuffled = bool(r.get("dataloader_params.valloader.shuffle")) and bool(r.get("dataloader_params.valloader.drop_last"))
        settings["val_drop_last"] = use("dataloader_params.valloader.drop_last", "finetune.val_drop_last", shuffled)
        use("dataloader_params.valloader.shuffle", "finetune.val_drop_last", f"{shuffled} (shuffle and drop_last)")
    for key, setting in (("dataloader_params.trainloader.batch_size", "batch_size"),
                         ("optimization_params.default.optimizer.params.lr", "lr"),
                         ("optimization_params.default.optimizer.params.weight_decay", "weight_decay"),
                         ("training_params.epochs", "epochs"), ("training_params.grad_clipping", "grad_clip"),
                         ("training_params.use_mixed_precision", "amp"),
                         ("dataloader_params.trainloader.num_workers", "num_workers")):
        value = r.get(key)
        if value is not None:
            settings[setting] = use(key, f"finetune.{setting}", value)
    warmup = {k: v for k, v in settings.items() if k in ("warmup_epochs", "warmup_steps")}
    for key in ("optimization_params.default.scheduler.params.LinearWarmup.warmup_iters",
                "optimization_params.default.scheduler.params.LinearWarmup.warmup_epochs"):
        if r.get(key) is not None:
            use(key, "finetune warm-up", f"{warmup} (the code sets it by dataset: classification.py:L104-113)")
    if r.get("optimization_params.default.scheduler.type") is not None:
        use("optimization_params.default.scheduler.type", "finetune.schedule",
            f"{settings.get('schedule')}, warmup_start_lr {settings.get('warmup_start_lr')} (utils/_utils.py:L116-165)")
    crop = r.get("dataset_params.val_transforms.CenterCrop.height")
    side = r.get("dataset_params.val_transforms.Resize.height")
    if side is not None:
        settings["resize_size"] = side
    if crop is not None:
        settings["img_size"] = crop
    use("dataset_params.val_transforms", "finetune.resize",
        f"squash to {settings.get('resize_size')}, centre crop {settings['img_size']} (defaults/bases.py:L66-74)")
    if r.get("dataset_params.val_transforms.Normalize"):
        use("dataset_params.val_transforms.Normalize", "finetune.norm",
            f"{settings.get('norm', 'dataset')} (defaults/bases.py:L145-148: the dataset class's mean/std)")
    r.get("dataset_params.val_transforms")  # the whole section is read: the test transforms repeat it
    if r.get("dataset_params.test_transforms") is not None:
        use("dataset_params.test_transforms", "finetune.resize", "as val_transforms")
    if r.get("dataset_params.train_transforms") is not None:
        use("dataset_params.train_transforms", "finetune.augment",
            "study1: the published params.json's train transforms (defaults/bases.py:L63-158)")
    if r.get("model_params.pretrained") is False and head == "deit":
        settings["deit_weights"] = use("model_params.pretrained", "finetune.deit_weights", "random")
    elif r.get("model_params.pretrained") is not None:
        use("model_params.pretrained", "finetune.deit_weights",
            "ImageNet DeiT-B, the default (utils/transformers/deit.py:L342-348)" if head == "deit" else "unused (linear head)")
    r.get("model_params.transformers_params.pretrained_type")
    if r.get("model_params.freeze_backbone") is not None:
        use("model_params.freeze_backbone", "finetune.head",
            "the DeiT head's blocks train" if not r.get("model_params.freeze_backbone") else
            "the DeiT head's blocks stay frozen, only its projector and classifier train (defaults/models.py:L284-286): "
            "medfm has no option for that; its DeiT head trains whole")
    drop = r.get("foundation_params.partial.drop_cutoff")
    if drop:
        settings["drop_cutoff"] = use("foundation_params.partial.drop_cutoff", "finetune.drop_cutoff",
                                      int(drop[0] if isinstance(drop, list) else drop))
    elif drop is not None:
        use("foundation_params.partial.drop_cutoff", "finetune.drop_cutoff", "none (the last block)")
    if r.get("transfer_learning_params.use_pretrained"):
        where = Path(r.get("transfer_learning_params.pretrained_path") or
                     Path(r.get("training_params.save_dir") or ".") / "checkpoints")
        settings["init_from"] = use("transfer_learning_params", "finetune.init_from",
                                    str(where / (r.get("transfer_learning_params.pretrained_model_name") or "")))
        settings["init_from_parts"] = "backbone"  # load_from_pretrained fills model.backbone only (pretrained_loader.py:L25)
    elif r.get("transfer_learning_params.use_pretrained") is not None:
        use("transfer_learning_params.use_pretrained", "finetune.init_from", "none (defaults/wrappers.py:L192-199)")
        r.get("transfer_learning_params")  # its path and name are read only when use_pretrained is true
    for key, why in (("training_params.val_every", "validated every epoch, best kept (defaults/trainer.py:L75-79)"),
                     ("training_params.save_best_model", "keep=best (defaults/trainer.py:L230-233)")):
        if r.get(key) is not None:
            use(key, "finetune.keep", why)
    save_dir, model_name = r.get("training_params.save_dir"), r.get("training_params.model_name")
    if save_dir and model_name:
        settings["out"] = str(Path(save_dir) / model_name)
    run.finetune = {**settings, "backbone": common["backbone"], "weights": common["weights"],
                    "data_root": common["data_root"], "head": head, "device": common["device"]}


def _extract_keys() -> set[str]:
    from medfm.config import ExtractConfig

    return set(ExtractConfig.model_fields)


def run_study_params(path: str | Path, dry_run: bool = False, fidelity: str = "fast") -> dict:
    """Map, log the mapping, and run it; returns the result record (with the mapping under 'params' and the
    fidelity with its departures under 'fidelity', in the stored row too)."""
    from rich.markup import escape

    from medfm.finetune import FinetuneConfig
    from medfm.ui import console

    run = map_params(path, fidelity)
    console.print(f"[bold]{path}[/]: study-1 params -> medfm {'extract + probe' if run.mode == 'probe' else 'finetune'}"
                  f" ({fidelity} fidelity" + (f", following {STUDY1.source})" if fidelity == "exact" else ")"))
    for key, how in run.used.items():
        console.print(escape(f"  used    {key}: {how}"))
    for key, why in run.ignored.items():
        console.print(escape(f"  ignored {key}: {why}"))
    print_settings(run, console)
    missing = missing_options(run.finetune, FinetuneConfig) if run.mode == "finetune" else []
    if dry_run:
        return {"params": run.report(), "extract": run.extract, "probe": run.probe, "finetune": run.finetune,
                "missing_options": missing}
    if missing:
        raise MedfmError(f"--fidelity exact needs the option(s) {', '.join(missing)}, which this medfm does not have yet",
                         "run with --fidelity fast, or see the mapping with --dry-run")
    if run.mode == "finetune":
        record = _finetune(run.finetune)
    else:
        record = run_native({"extract": run.extract, "probe": run.probe})
    record["params"] = run.report()
    record["fidelity"] = run.fidelity_entry()
    if record.get("run_key") and record.get("results_store"):
        from medfm.results import ResultsStore

        results_json = Path(record["out"]) / "results.json" if record.get("out") else None
        ResultsStore(record["results_store"]).annotate(record["run_key"], {"fidelity": record["fidelity"]}, results_json)
    return record


def print_settings(run: StudyRun, console) -> None:
    """Exact: every setting as mapped from the study's code, with its code location; fast: what differs from exact."""
    if run.fidelity == "exact":
        console.print(f"  settings from the study's code ({STUDY1.source}):")
    else:
        console.print("  differs from --fidelity exact (the study's code):")
    from rich.markup import escape

    for s in run.settings():
        opts = ", ".join(f"{k}={v}" for k, v in s.get("options", {}).items())
        value = s["exact"] if run.fidelity == "exact" else f"{s['fast']} (exact: {s['exact']})"
        console.print(escape(f"    {s['setting']}: {value}" + (f" (options: {opts})" if opts and run.fidelity == "exact"
                                                                 else "") + f" — code: {', '.join(s['code'])}"))
        if s.get("paper"):
            console.print(escape(f"      departs from the paper: {s['paper']}"))
        for need in s.get("needs", ()):
            console.print(escape(f"      not reproduced yet (needs {need})"))
    if run.fidelity == "exact":
        console.print("  settings of the study's code for other rows (not this run's):")
        for s in run.other_settings():
            console.print(escape(f"    {s['setting']}: {s['exact']} — code: {', '.join(s['code'])}"))


def _finetune(settings: dict) -> dict:
    try:
        from medfm.finetune import FinetuneConfig, run_finetune
    except ImportError:
        raise MedfmError("this params.json asks for fine-tuning (unfrozen layers), which this medfm build lacks",
                         "set foundation_params.freeze_backbone true and partial.unfreeze_cutoff -1 for a frozen run") from None
    return run_finetune(FinetuneConfig(**settings))


def run_native(config: dict, source: str = "config") -> dict:
    """medfm's own config: sections ``extract`` + ``probe`` (probe's cache comes from extract), or ``finetune``."""
    from pydantic import ValidationError

    from medfm.config import ExtractConfig, ProbeConfig

    unknown = set(config) - {"extract", "probe", "finetune"}
    if unknown:
        raise MedfmError(f"{source}: unknown section(s) {', '.join(sorted(unknown))}",
                         "a run config holds sections extract + probe, or finetune")
    if "finetune" in config:
        return _finetune(config["finetune"])
    if "extract" not in config:
        raise MedfmError(f"{source}: no extract (+ probe) or finetune section", "see README 'medfm run'")
    from medfm.extract import run_extract
    from medfm.probe import run_probe

    try:
        ex_cfg = ExtractConfig(**config["extract"])
        pr_cfg = ProbeConfig(**{**config.get("probe", {}), "cache": "(from extract)"})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise MedfmError(f"{source}: invalid setting {where}: {err['msg']}", "see `medfm extract --help` / `medfm probe --help`") from None
    from medfm.heads import heads_for

    if pr_cfg.head not in heads_for("probe"):
        raise MedfmError(f"probe head {pr_cfg.head!r} is not available in this medfm yet", "use the linear head (\"none\")")
    result = run_extract(ex_cfg)
    pr_cfg = pr_cfg.model_copy(update={"cache": str(result.cache)})
    record = run_probe(pr_cfg)
    record["extract"] = result.to_dict()
    return record


def run_config_file(path: str | Path) -> dict:
    from medfm.config import _read_file

    return run_native(_read_file(Path(path)), str(path))
