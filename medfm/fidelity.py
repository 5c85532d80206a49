"""Fidelity: how closely a run follows a study's published CODE, as one declarative table per study.

``fast`` is medfm's cached path (today's default): frozen rows are extract + probe on cached,
un-augmented features, preprocessing and training are medfm's own. ``exact`` is the experiment as
the study's code ran it: every row is a ``medfm finetune`` (frozen rows with ``unfreeze=0``, since
online augmentation cannot come from a cache), with the code's weights, data lists, preprocessing,
tokens, optimiser, schedule, epoch choice and metrics.

Each :class:`Setting` says, for one thing the study's code decides: the exact value (in medfm's
option names, CONTRACT17), today's fast value, the code location it follows (``file:Lnn`` at the
commit the table names, so a reader can check it), and where the code departs from the paper's
text. ``needs`` names what the exact mapping would need beyond the contract's options (so the gap
is visible, never silently dropped). Where the issue was silent, the table follows the code and
says so in ``note``.

Nothing here builds a model or reads data: the sweep's ``--plan``, ``medfm run --params --dry-run``
and the report read these tables.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

FIDELITIES = ("fast", "exact")


@dataclass(frozen=True)
class Row:
    """One planned row, as the table sees it (medfm names; ``dataset`` is the base name, no protocol)."""

    backbone: str
    dataset: str
    head: str
    scenario: str  # "frozen" or "unfrozen" (the study's words)
    unfreeze: int | str | None = None  # unfrozen rows: the depth asked for


def _always(row: Row) -> bool:
    return True


@dataclass(frozen=True)
class Setting:
    key: str  # short id, stable (tests and records use it)
    what: str  # the setting, in words
    exact: dict | Callable[[Row], dict]  # FinetuneConfig keys in exact mode ({} = nothing to set)
    exact_text: str  # the exact value in words
    fast_text: str  # today's value in words
    code: tuple[str, ...]  # code locations followed (file:Lnn at the table's commit)
    fast: dict = field(default_factory=dict)  # today's values of the same options, where they are options
    paper: str | None = None  # where the code departs from the paper's text
    when: Callable[[Row], bool] = _always  # rows the setting concerns
    needs: tuple[str, ...] = ()  # what exact would need that CONTRACT17 does not have
    note: str = ""

    def exact_for(self, row: Row) -> dict:
        return dict(self.exact(row) if callable(self.exact) else self.exact)

    def differs(self) -> bool:
        """Whether fast does something else than the code (False only where both already agree)."""
        return self.exact_text != self.fast_text

    def describe(self, row: Row | None = None) -> dict:
        """The setting as a record entry / dry-run line: value, code location, paper departure."""
        out = {"setting": self.key, "what": self.what, "exact": self.exact_text, "fast": self.fast_text,
               "code": list(self.code)}
        if row is not None:
            out["options"] = self.exact_for(row)
        if self.paper:
            out["paper"] = self.paper
        if self.needs:
            out["needs"] = list(self.needs)
        if self.note:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class StudyCode:
    """A study's code: where it is, how its names map to medfm's, and its settings."""

    name: str
    repo: str
    commit: str
    datasets: dict[str, str]  # medfm dataset name -> the dataset (with protocol) exact runs
    settings: tuple[Setting, ...]
    backbones: dict[str, str] = field(default_factory=dict)  # medfm backbone name -> the one the code loads
    base: dict = field(default_factory=dict)  # training settings every exact row starts from
    unfreeze_rule: Callable[[Row], int | str] = lambda row: 0 if row.scenario == "frozen" else row.unfreeze

    @property
    def source(self) -> str:
        return f"{self.repo}@{self.commit}"

    def backbone_for(self, backbone: str) -> str:
        return self.backbones.get(backbone, backbone)

    def dataset_for(self, dataset: str) -> str:
        return self.datasets.get(base_name(dataset), dataset)

    def concerns(self, row: Row) -> list[Setting]:
        return [s for s in self.settings if s.when(row)]

    def row_settings(self, row: Row) -> dict:
        """The FinetuneConfig keys of an exact row: the code's training base, then every setting that
        concerns the row, then the unfreeze depth the code really trains."""
        out = dict(self.base)
        for s in self.concerns(row):
            out.update(s.exact_for(row))
        out["unfreeze"] = self.unfreeze_rule(row)
        out["dataset"] = self.dataset_for(row.dataset)
        return out

    def departures(self, row: Row | None = None, fidelity: str = "exact") -> list[dict]:
        """Exact: every setting that concerns the row (its code location, and where the code departs from
        the paper). Fast: the settings where medfm's fast path does something else than the code."""
        chosen = self.concerns(row) if row is not None else list(self.settings)
        if fidelity == "fast":
            chosen = [s for s in chosen if s.differs()]
        return [s.describe(row) for s in chosen]

    def needs(self) -> list[str]:
        return sorted({n for s in self.settings for n in s.needs})


def base_name(dataset: str) -> str:
    """``ddsm:study1_code`` -> ``ddsm``."""
    return dataset.split(":", 1)[0]


# --------------------------------------------------------------------------------------------------------------
# Study 1: Mansoori et al. 2025, sajjad-sh33/Medical-Transfer-Learning @ 02db977 (also the huix2024 preset's
# DeiT head and trainer: the second study's joanaapa/Foundation-Medical shares its DeiT head per issue 17; its
# own code is not read here, so huix2024's exact rows follow study 1's code and say so).
# --------------------------------------------------------------------------------------------------------------
S1_GREY = ("chexpert", "ddsm")  # img_channels = 1 (defaults/datasets.py:L18, L98)
S1_WARMUP_EPOCHS = ("aptos2019", "ddsm")  # classification.py:L104-106
S1_WARMUP_ITERS = ("isic2019", "chexpert")  # classification.py:L109-111; other datasets: 1 iteration (_utils.py:L124-126)
S1_DECLARED_NORM = ("aptos2019", "isic2019", "chexpert", "ddsm")  # hard-coded mean/std (their :study1_code protocols)
# the linear head's input in the code, and the medfm --feature that is the same (each is also medfm's default)
S1_FEATURE = (("dinov2", "cls", "CLS token after the final norm (x_norm_clstoken)", "defaults/models.py:L364-377"),
              ("mae", "mean", "mean of the patch tokens, CLS excluded", "defaults/models.py:L313-323"),
              ("aimv2", "mean", "mean of last_hidden_state", "defaults/models.py:L327-337"),
              ("coca", "pooled", "the attention-pooled token", "defaults/models.py:L339-345"),
              ("sam2", "mean", "mean of vision_features", "defaults/models.py:L349-362"),
              ("openclip", "pooled", "the projected image embedding", "defaults/models.py:L404-413"))


def _s1_feature(row: Row) -> dict:
    return next(({"feature": f} for prefix, f, _, _ in S1_FEATURE if row.backbone.startswith(prefix)), {})
YMODEL_FREEZE = ("defaults/models.py:L571", "defaults/models.py:L588-591", "defaults/models.py:L827",
                 "defaults/models.py:L843-846", "defaults/bases.py:L319-322", "defaults/models.py:L284-289")


def _s1(row: Row) -> str:
    return "ddsm" if row.dataset in ("cbis_ddsm", "ddsm") else row.dataset


STUDY1 = StudyCode(
    name="study1", repo="sajjad-sh33/Medical-Transfer-Learning", commit="02db977",
    datasets={"aptos2019": "aptos2019:study1_code", "isic2019": "isic2019:study1_code",
              "chexpert": "chexpert:study1_code", "cbis_ddsm": "ddsm:study1_code", "ddsm": "ddsm:study1_code"},
    backbones={"clip_vitb16": "openclip_vitb16"},  # utils/transformers/clip.py:L8
    # params.json: AdamW lr 1e-4, wd 1e-5, 100 epochs, batch 64, grad clipping 1.0, mixed precision
    base={"epochs": 100, "batch_size": 64, "lr": 1e-4, "weight_decay": 1e-5, "grad_clip": 1.0, "amp": True,
          "img_size": 224},
    unfreeze_rule=lambda row: 0 if row.scenario == "frozen" or row.head == "deit" else row.unfreeze,
    settings=(
        Setting("deit_init", "DeiT head initialisation",
                exact={}, exact_text="ImageNet-supervised DeiT-B deit_base_patch16_224 (deit_weights default: "
                                     "deit_base_patch16_224.fb_in1k from $MEDFM_DEIT_WEIGHTS or the hub)",
                fast_text="ImageNet-supervised DeiT-B deit_base_patch16_224 (deit_weights default: "
                          "deit_base_patch16_224.fb_in1k from $MEDFM_DEIT_WEIGHTS or the hub)",
                code=("defaults/models.py:L255-257", "utils/transformers/deit.py:L342-348",
                      "utils/transformers/transformers_utils.py:L57", "params.json:model_params.pretrained"),
                when=lambda r: r.head == "deit",
                note="the same in both fidelities: deit_weights' default (issue 17); offline without the file medfm "
                     "stops with one line (--deit-weights PATH, or random)"),
        Setting("deit_frozen", "'unfrozen' rows with the DeiT head",
                exact={}, exact_text="unfreeze=0: no backbone block trains",
                fast_text="unfreeze=N (the preset's depth, 'all'): the backbone trains",
                code=YMODEL_FREEZE,
                paper="the paper reports these rows as unfrozen; every Ymodel_* forward calls freeze_foundation(), "
                      "which sets requires_grad=False on the whole backbone, undoing partial.unfreeze_cutoff",
                when=lambda r: r.head == "deit" and r.scenario == "unfrozen",
                note="holds for runs configured the code's way (freeze_backbone true + unfreeze_cutoff >= 0); a "
                     "params.json with foundation_params.freeze_backbone false trains every block and is mapped so"),
        Setting("online_frozen", "frozen rows",
                exact={}, exact_text="medfm finetune with unfreeze=0: the head trains online on augmented images",
                fast_text="extract once + probe on cached, un-augmented features",
                code=("defaults/trainer.py:L63-80", "defaults/models.py:L284-286", "defaults/models.py:L292-296"),
                when=lambda r: r.scenario == "frozen"),
        Setting("coca_tokens", "tokens the DeiT head reads from CoCa",
                exact={"tokens_from": "attn_pool"}, fast={"tokens_from": "patch"},
                exact_text="tokens_from=attn_pool: the pooled token + the attention-pooler outputs",
                fast_text="tokens_from=patch: the ViT's patch tokens",
                code=("defaults/models.py:L339-347", "defaults/models.py:L721-727"),
                when=lambda r: r.head == "deit" and r.backbone.startswith("coca")),
        Setting("dinov2_tokens", "tokens the DeiT head reads from DINOv2",
                exact={}, exact_text="the last block's patch tokens before the final LayerNorm (x_prenorm[:, 1:]): medfm's "
                           "DINOv2 tokens (registry tokens_from 'last_block')",
                fast_text="the same tokens (medfm's DINOv2 tokens are the last block's, before the final norm)",
                code=("defaults/models.py:L370", "defaults/models.py:L829"),
                when=lambda r: r.head == "deit" and r.backbone.startswith("dinov2")),
        Setting("clip_weights", "CLIP ViT-B/16 weights",
                exact={}, fast={},
                exact_text="openclip_vitb16: open_clip ViT-B-16 laion2b_s34b_b88k",
                fast_text="openclip_vitb16: open_clip ViT-B-16 laion2b_s34b_b88k",
                code=("utils/transformers/clip.py:L7-9",),
                paper="the paper says CLIP; the code loads open_clip's LAION-2B weights, not OpenAI's",
                when=lambda r: "clip" in r.backbone and not r.backbone.startswith("coca")),
        Setting("ddsm", "DDSM data",
                exact={"dataset": "ddsm:study1_code"}, fast={"dataset": "cbis_ddsm"},
                exact_text="ddsm:study1_code: the DDSM raw image lists, normal (0) vs benign + cancer (1)",
                fast_text="the mansoori2025/huix2024 presets: cbis_ddsm (CBIS-DDSM, benign vs malignant); params.json: "
                          "medfm's ddsm (its default protocol)",
                code=("defaults/datasets.py:L104", "defaults/datasets.py:L131-137", "defaults/datasets.py:L144-155"),
                paper="the paper says CBIS-DDSM (benign vs malignant); the code reads DDSM lists (normal vs abnormal)",
                when=lambda r: _s1(r) == "ddsm"),
        Setting("splits", "image lists and splits",
                exact=lambda r: {"dataset": STUDY1.dataset_for(r.dataset)},
                exact_text="<dataset>:study1_code: the code's lists and split algorithm",
                fast_text="the registry's official split or medfm's seeded split with patient boundaries",
                code=("defaults/bases.py:L247-276", "defaults/datasets.py:L221-225", "defaults/datasets.py:L270",
                      "defaults/datasets.py:L278-282", "defaults/datasets.py:L51-69"),
                note="APTOS reads train_1.csv and holds out 30 % (halved into val/test), ISIC 20 %, both by "
                     "random.Random(42).shuffle of the row indices; CheXpert sorts train.csv by Path and takes the "
                     "first int(0.2 N) + 15 rows (label-based .loc slicing), halved into val/test"),
        Setting("labels", "labels",
                exact=lambda r: {"dataset": STUDY1.dataset_for(r.dataset)},
                exact_text="the code's labels (CheXpert U-Zeros: -1 and blank -> 0, an all-zero row -> No Finding; "
                           "14 labels with BCE)",
                fast_text="the registry dataset's labels",
                code=("defaults/datasets.py:L71-76", "defaults/wrappers.py:L321-331"),
                when=lambda r: _s1(r) == "chexpert"),
        Setting("metrics", "metrics and the metric that picks the best epoch",
                exact=lambda r: {"dataset": STUDY1.dataset_for(r.dataset)},
                exact_text="the code's target_metric, as the :study1_code protocol's headline (APTOS quadratic_kappa, "
                           "ISIC recall_macro, CheXpert and DDSM roc_auc_study1: one-vs-one, 0.5 for a label with no "
                           "positives)",
                fast_text="the dataset's headline metric; ROC-AUC one-vs-rest, labels without positives skipped",
                code=("utils/metrics.py:L21-39", "utils/metrics.py:L102-107", "defaults/datasets.py:L24",
                      "defaults/datasets.py:L102", "defaults/datasets.py:L198", "defaults/datasets.py:L255"),
                note="no --metric is set: the :study1_code protocol declares the code's metric as its headline"),
        Setting("squash", "resizing",
                exact={"resize": "squash", "resize_size": 256, "img_size": 224}, fast={"resize": "crop"},
                exact_text="resize=squash, resize_size=256: Resize((256, 256)) ignoring aspect, CenterCrop 224",
                fast_text="resize=crop: shorter side to the input size, centre crop (aspect kept)",
                code=("params.json:dataset_params.*_transforms.Resize", "defaults/bases.py:L66-74",
                      "defaults/bases.py:L38-39", "defaults/bases.py:L220-229")),
        Setting("norm", "normalisation",
                exact=lambda r: {"norm": "protocol" if _s1(r) in S1_DECLARED_NORM else "dataset"},
                fast={"norm": "backbone"},
                exact_text="norm=protocol: the code's own mean/std for APTOS, ISIC, CheXpert and DDSM (its "
                           ":study1_code protocols declare them; one channel for grey data); norm=dataset (the train "
                           "split's own) for a dataset the code does not hold",
                fast_text="norm=backbone: each backbone's mean/std",
                code=("defaults/bases.py:L145-148", "defaults/datasets.py:L21-22", "defaults/datasets.py:L157-163",
                      "defaults/datasets.py:L185-186", "defaults/datasets.py:L246-247")),
        Setting("grey_stem", "grey images",
                exact={"grey": "red"}, fast={"grey": "repeat"},
                exact_text="grey=red: one channel ('L') through the stem's red-channel filter only",
                fast_text="grey=repeat: grey repeated to RGB",
                code=("defaults/datasets.py:L18", "defaults/datasets.py:L98", "utils/_utils.py:L25-31",
                      "defaults/models.py:L74-87", "defaults/models.py:L164-175"),
                when=lambda r: _s1(r) in S1_GREY),
        Setting("augment", "training augmentation",
                exact={"augment": "study1"}, fast={"augment": "auto"},
                exact_text="augment=study1: RandomResizedCrop(224, scale 0.8-1.2), vertical + horizontal flips "
                           "p=0.5, ColorJitter(0.2, 0.2, 0.1, 0.1) at p=0.8",
                fast_text="frozen: none (cached features); unfrozen: augment=auto (modality-aware)",
                code=("params.json:dataset_params.train_transforms", "defaults/bases.py:L63-158",
                      "utils/_utils.py:L167-168")),
        Setting("optimizer", "optimiser",
                exact={"lr": 1e-4, "weight_decay": 1e-5, "layer_decay": 1.0},
                exact_text="AdamW lr 1e-4, weight decay 1e-5, one rate for head and backbone",
                fast_text="frozen: Adam lr x L2 grid on z-scored features (probe solver grid); unfrozen: AdamW "
                          "lr 1e-4, weight decay 1e-5",
                code=("params.json:optimization_params.default.optimizer", "defaults/wrappers.py:L205-220")),
        Setting("no_decay", "parameters without weight decay",
                exact={"no_decay": "biases_norms"}, fast={"no_decay": "biases_norms_tokens"},
                exact_text="no_decay=biases_norms: no decay on biases and 1-D parameters of every trainable module "
                           "(the DeiT head's cls_token and pos_embed are decayed)",
                fast_text="fine-tune: no_decay=biases_norms_tokens; probe: L2 on every weight",
                code=("defaults/wrappers.py:L234-251",)),
        Setting("backbone_eval", "backbone mode while training",
                exact=lambda r: {"backbone_eval": r.scenario == "frozen" or r.head == "deit" or r.unfreeze not in ("all", -1)},
                exact_text="backbone_eval=true wherever the code sets freeze_backbone (frozen, partial and DeiT-head "
                           "rows): the whole backbone in eval mode, trained blocks too; false for a full fine-tune",
                fast_text="backbone_eval=false: trained blocks in train mode",
                fast={"backbone_eval": False},
                code=("defaults/models.py:L292-296", "defaults/models.py:L588-591")),
        Setting("schedule", "learning-rate schedule",
                exact={"schedule": "constant", "warmup_start_lr": 1e-8}, fast={"schedule": "cosine",
                                                                               "warmup_start_lr": 0.0},
                exact_text="schedule=constant, warmup_start_lr=1e-8: linear warm-up from 1e-8, then constant",
                fast_text="schedule=cosine: linear warm-up from 0, then cosine decay",
                code=("params.json:optimization_params.default.scheduler.type", "utils/_utils.py:L116-165",
                      "defaults/wrappers.py:L299-302", "defaults/trainer.py:L126"),
                note="the code's warm-up adds one increment per step from step 0, so it ends one increment above "
                     "lr (x (1 + 1/warm-up steps)) and stays there"),
        Setting("warmup", "warm-up length",
                exact=lambda r: ({"warmup_epochs": 5.0} if _s1(r) in S1_WARMUP_EPOCHS
                                 else {"warmup_steps": 1000 if _s1(r) in S1_WARMUP_ITERS else 1, "warmup_epochs": None}),
                exact_text="5 epochs for APTOS and DDSM (warmup_epochs=5), 1,000 iterations for ISIC and CheXpert "
                           "(warmup_steps=1000), uncapped; any other dataset: update_warmup sets both to 0, so "
                           "LinearWarmup uses 1 iteration (warmup_steps=1)",
                fast_text="warmup_steps=1000 for every dataset, capped at a tenth of the run",
                fast={"warmup_steps": 1000},
                code=("classification.py:L104-113", "classification.py:L194", "utils/_utils.py:L120-131"),
                note="update_warmup() overrides params.json's LinearWarmup values by dataset (classification.py:L194 "
                     "calls it before every run)"),
        Setting("best_on_val", "epoch tested",
                exact={"keep": "best", "early_stop_patience": 0, "val_drop_last": True},
                exact_text="the epoch with the best val target metric (strictly better), validated every epoch on "
                           "a shuffle of val without its last incomplete batch (val_drop_last=true)",
                fast_text="frozen: the grid point best on val; unfrozen: keep=best, every val image",
                code=("defaults/trainer.py:L75-79", "defaults/trainer.py:L183-222", "defaults/trainer.py:L223-233",
                      "defaults/trainer.py:L240-255", "params.json:training_params.save_best_model",
                      "params.json:dataloader_params.valloader"),
                note="the code's val shuffle is unseeded; medfm seeds it by run seed and epoch"),
        Setting("training_length", "epochs, batch, clipping, precision",
                exact={"epochs": 100, "batch_size": 64, "grad_clip": 1.0, "amp": True, "amp_dtype": "fp16",
                       "drop_last": True},
                exact_text="100 epochs, batch 64, drop_last=true (the last partial batch dropped), grad-norm clip 1.0 "
                           "on unscaled gradients, mixed precision fp16 with a GradScaler (amp_dtype=fp16; on CUDA)",
                fast_text="frozen: the probe's epochs/batch; unfrozen: 100 epochs, batch 64, clip 1.0, bf16 autocast",
                code=("params.json:training_params", "params.json:dataloader_params.trainloader",
                      "defaults/trainer.py:L108-123"),
                note="CPU trains in fp32 in both (the code's autocast is CUDA's); fast's amp is bf16 autocast"),
        Setting("linear_feature", "linear head's input",
                exact=_s1_feature, exact_text="; ".join(f"{b}: feature={f} ({w})" for b, f, w, _ in S1_FEATURE),
                fast_text="; ".join(f"{b}: feature={f} ({w})" for b, f, w, _ in S1_FEATURE),
                code=tuple(c for _, _, _, c in S1_FEATURE),
                when=lambda r: r.head == "linear",
                note="the same kinds as medfm's defaults for these backbones; exact sets them explicitly"),
        Setting("not_runnable", "rows the published code cannot run",
                exact={}, exact_text="VMamba: no model branch (NotImplementedError); AIMv2 / CoCa partial unfreezing: "
                                     "their branches set no self.blocks (AttributeError): exact runs medfm's version",
                fast_text="medfm's version",
                code=("classification.py:L138-139", "defaults/models.py:L253-277", "defaults/models.py:L91-136",
                      "defaults/models.py:L435-440"),
                when=lambda r: r.backbone.startswith("vmamba") or (r.backbone.startswith(("aimv2", "coca"))
                                                                   and r.unfreeze not in (0, "all", -1, None)),
                note="issue 17 point 9: these rows of the study cannot come from its code as published"),
        Setting("drop_cutoff", "features from an intermediate block",
                exact={}, exact_text="drop_cutoff from foundation_params.partial.drop_cutoff (none in the presets)",
                fast_text="the last block",
                code=("params.json:foundation_params.partial.drop_cutoff", "defaults/models.py:L176-177",
                      "defaults/models.py:L365-366")),
        Setting("init_from", "starting checkpoint",
                exact={}, exact_text="init_from from transfer_learning_params, init_from_parts=backbone (none in the "
                                     "presets)",
                fast_text="the backbone's weights",
                code=("params.json:transfer_learning_params", "defaults/wrappers.py:L192-199",
                      "utils/pretrained_loader.py:L20-25")),
    ),
)


# --------------------------------------------------------------------------------------------------------------
# Study 3: Huang et al. 2024, GuanghuiFU/medical_dino_eval @ f2b17be (train_model.py, utils.py, eval_biu.py,
# inference_biu.py, main_script_train.py). Its training code cannot run as published (see `runnable`).
# --------------------------------------------------------------------------------------------------------------
S3_CNNS = ("vgg16", "resnet50", "densenet121")


def _cnn(row: Row) -> bool:
    return row.backbone in S3_CNNS


STUDY3 = StudyCode(
    name="study3", repo="GuanghuiFU/medical_dino_eval", commit="f2b17be",
    # the code names only chest_xray's folders (train_model.py:L16-19); eye_fund and skin_dermoscopy have no paths
    datasets={"kermany_cxr_224": "chest_xray_pneumonia:study3_code", "chest_xray_pneumonia": "chest_xray_pneumonia:study3_code"},
    # torch.hub.load("facebookresearch/dinov2", "dinov2_vit{s,b,l}14_lc") (utils.py:L86-97)
    backbones={f"dinov2_vit{s}14": f"dinov2_vit{s}14_lc" for s in ("s", "b", "l")},
    # main_script_train.py:L24: 100 epochs, batch 32, Adam lr 1e-4; utils.py:L100-101: no decay, no scheduler
    base={"epochs": 100, "batch_size": 32, "lr": 1e-4, "weight_decay": 0.0, "grad_clip": None, "amp": False,
          "img_size": 224},
    unfreeze_rule=lambda row: 0 if row.scenario == "frozen" else "all",
    settings=(
        Setting("dino_lc", "DINOv2 model",
                exact={}, exact_text="dinov2_vit{s,b,l}14_lc: torch.hub's backbone + its ImageNet linear head (layers=4); "
                                     "the classifier reads the 1,000 ImageNet logits (--feature pooled)",
                fast_text="dinov2_vit*14: the backbone's pooled feature",
                code=("utils.py:L86-97",),
                when=lambda r: r.backbone.startswith("dinov2"),
                note="the backbone names map to their _lc entries in exact mode; their weights are torch.hub's two "
                     "files (dinov2_vits14_linear4_head.pth with dinov2_vits14_pretrain.pth beside it)"),
        Setting("mlp_head", "classifier",
                exact=lambda r: {"head": "mlp", "mlp_hidden": 256} if r.backbone.startswith("dinov2") else {},
                exact_text="DINOv2: head=mlp, Linear(1000, 256) -> ReLU -> Linear(256, classes); CNNs: the final layer "
                           "replaced by a linear layer (head=linear)",
                fast_text="linear head",
                code=("utils.py:L368-385", "utils.py:L68-85", "utils.py:L257"),
                note="the code builds 3 outputs for every dataset (utils.py:L257); exact uses the dataset's classes"),
        Setting("freeze", "frozen rows",
                exact={}, exact_text="--freeze: the whole DINOv2 model (its ImageNet head too) or the CNN's "
                                     "features frozen; the classifier trains online (medfm finetune, unfreeze=0)",
                fast_text="extract once + probe (grid solver) on cached features",
                code=("utils.py:L57-59", "utils.py:L70", "utils.py:L75-77", "utils.py:L82-83", "utils.py:L378-380"),
                when=lambda r: r.scenario == "frozen",
                note="ResNet's `model.fc.requires_grad = True` sets a module attribute, not its parameters"),
        Setting("unfrozen", "unfrozen rows",
                exact={}, exact_text="no --freeze: every layer trains (unfreeze=all)", fast_text="unfreeze=all",
                code=("main_script_train.py:L22-27",), when=lambda r: r.scenario == "unfrozen"),
        Setting("cnn_weights", "CNN weights",
                exact={"weights": "random"}, fast={"weights": None},
                exact_text="random init: models.vgg16/resnet50/densenet121(pretrained=False)",
                fast_text="ImageNet weights",
                code=("utils.py:L69", "utils.py:L74", "utils.py:L81", "train_model.py:L56"),
                paper="the paper compares ImageNet-pretrained CNNs; the training code ignores --pretrain and builds "
                      "them with pretrained=False (inference_biu.py:L30-37 builds pretrained=True, then loads the "
                      "trained checkpoint over it)",
                when=_cnn,
                note="VGG16 and ResNet50 stop in the published code (model.classifier.in_features, utils.py:L71, "
                     "L78) and choose_model is called with 3 arguments for 2 (train_model.py:L45, utils.py:L62): "
                     "the code cannot run as published; exact follows what it would build"),
        Setting("preprocess", "preprocessing",
                exact={"resize": "crop", "resize_size": 256, "norm": "backbone", "grey": "repeat"},
                fast={"resize": "crop", "norm": "backbone", "grey": "repeat"},
                exact_text="Resize(256) on the shorter side, CenterCrop 224, ImageNet mean/std, RGB",
                fast_text="resize=crop: shorter side straight to 224, centre crop; the backbone's (ImageNet) mean/std",
                code=("utils.py:L22-30", "utils.py:L283"),
                note="resize=crop with resize_size=256 is the crop_shorter policy: Resize(256) bilinear on the "
                     "shorter side, then CenterCrop 224"),
        Setting("augment", "training augmentation",
                exact={"augment": "none"}, fast={"augment": "none"}, exact_text="none", fast_text="none",
                code=("utils.py:L252",)),
        Setting("optimizer", "optimiser and schedule",
                exact={"schedule": "constant", "warmup_steps": 0, "warmup_start_lr": 0.0, "lr": 1e-4,
                       "weight_decay": 0.0},
                fast={"schedule": "cosine", "warmup_steps": 0},
                exact_text="Adam lr 1e-4, no weight decay (AdamW with decay 0 is the same), constant rate, no "
                           "warm-up, no clipping, fp32",
                fast_text="the same, but the rate decays with a cosine",
                code=("utils.py:L100-101", "utils.py:L132-163")),
        Setting("split", "data and splits",
                exact=lambda r: {"dataset": STUDY3.dataset_for(r.dataset)},
                exact_text="chest X-ray: chest_xray_pneumonia:study3_code (train/ in os.listdir order shuffled with "
                           "random.seed 1, random_split 8:2 with torch seed 1 into train/val; test/ as test); "
                           "fundus and dermoscopy: the registry's split (the code names no folders for them)",
                fast_text="kermany_cxr_224, ichallenge_amd, ham10000_224 with the registry's splits",
                code=("train_model.py:L16-20", "utils.py:L250-259", "utils.py:L270-276", "train_model.py:L4-5",
                      "inference_biu.py:L15-21"),
                needs=("study3_code protocols for ichallenge_amd and ham10000_224 (the code gives no paths for "
                       "eye_fund / skin_dermoscopy)",)),
        Setting("train_order", "training order",
                exact={"train_shuffle": False, "eval_after_first_val": True},
                exact_text="train_shuffle=false: the same order every epoch (train loader not shuffled); "
                           "eval_after_first_val=true: after the first validation the model stays in eval mode "
                           "(CNN BatchNorm frozen)",
                fast_text="reshuffled every epoch; train mode while training",
                code=("utils.py:L265", "utils.py:L190", "utils.py:L146-157")),
        Setting("best_on_val", "epoch tested",
                exact={"keep": "best", "early_stop_patience": 0, "metric": "accuracy", "val_batch_mean": True},
                exact_text="the epoch with the best val accuracy, strictly better; val_batch_mean=true: the mean of "
                           "per-batch accuracies of a shuffled val loader (batch 32, the last smaller batch kept)",
                fast_text="frozen: the grid point best on the headline metric; unfrozen: keep=best, pooled val rows",
                code=("utils.py:L236-241", "utils.py:L190-213", "utils.py:L266", "inference_biu.py:L7-9"),
                note="the code's val shuffle is unseeded; medfm seeds it by run seed and epoch"),
        Setting("metrics", "test metrics",
                exact={"metric": "accuracy"},
                exact_text="accuracy (headline), weighted precision / recall / F1",
                fast_text="the dataset's headline metric",
                code=("eval_biu.py:L27-45", "eval_biu.py:L79", "inference_biu.py:L79-82")),
        Setting("bootstrap", "confidence intervals",
                exact={"bootstrap": 5000, "ci": "mean_of_replicates"},
                exact_text="bootstrap=5000, ci=mean_of_replicates: 5,000 resamples of the test predictions (seeded; "
                           "the code's are unseeded); the interval is a bootstrap CI (RandomState(47), 5,000) of the "
                           "MEAN of those replicates, and the record keeps that mean (replicate_mean), which the "
                           "code prints as the metric",
                fast_text="bootstrap=5000 percentile CI of the metric",
                code=("eval_biu.py:L11-24", "eval_biu.py:L36-54"),
                paper="the paper's 95 % CIs are the code's CI of the mean of the replicates, far narrower than a "
                      "percentile CI of the metric"),
    ),
)

STUDIES: dict[str, StudyCode] = {s.name: s for s in (STUDY1, STUDY3)}


def study(name: str) -> StudyCode:
    return STUDIES[name]


def record_entry(fidelity: str, code: StudyCode | None, row: Row | None, overrides: dict | None = None) -> dict:
    """What a run record holds under ``fidelity``: the mode, the study code followed, and the departures
    (exact: every setting with its code location and paper departure; fast: what differs from the code)."""
    entry = {"mode": fidelity, "study_code": code.source if code else None,
             "departures": code.departures(row, fidelity) if code else []}
    if overrides:
        entry["overridden"] = dict(overrides)  # settings the user set over the table's (no longer the code's)
    return entry


def missing_options(settings: dict, config_cls) -> list[str]:
    """Option names an exact row sets that this medfm's config does not have yet (other helpers build them)."""
    return sorted(set(settings) - set(config_cls.model_fields))


def report_lines(groups) -> list[str]:
    """Markdown lines for ``medfm report``: per row group, the fidelity it ran and its departures."""
    lines = []
    for g in groups:
        fid = next((r.get("fidelity") for r in g.rows if r.get("fidelity")), None)
        if not fid or not fid.get("study_code"):
            continue  # a row of no study (a sweep without a study preset): nothing to compare with
        deps = fid.get("departures") or []
        what = ", ".join(f"{d['setting']}{'*' if d.get('paper') else ''} ({d['code'][0]})" for d in deps) or "none"
        mine = ", ".join(f"{k}={v}" for k, v in (fid.get("overridden") or {}).items())
        lines.append(f"- {g.dataset} {g.label}: fidelity {fid['mode']}"
                     + (f", following {fid['study_code']}" if fid.get("study_code") else "")
                     + f"; {'settings from the code' if fid['mode'] == 'exact' else 'differs from the code in'}: {what}"
                     + (f"; set over the code's: {mine}" if mine else ""))
    if lines:
        lines.append("")
        lines.append("(* the code departs from the paper's text there; the record's `fidelity` has each setting's "
                     "code locations and departure)")
    return (["## Fidelity", ""] + lines + [""]) if lines else []


def markdown_table(name: str) -> str:
    """README's table of a study's settings (generated, so it cannot drift from the table above)."""
    code = STUDIES[name]
    out = [f"| setting | exact | fast (today's) | code ({code.source}) | paper / not reproduced yet |",
           "|---|---|---|---|---|"]
    for s in code.settings:
        last = "; ".join([f"paper: {s.paper}"] * bool(s.paper) + [f"needs {n}" for n in s.needs]) or "—"
        out.append(f"| `{s.key}` {s.what} | {s.exact_text} | {s.fast_text} | {', '.join(f'`{c}`' for c in s.code)} "
                   f"| {last} |")
    return "\n".join(out).replace("\\", "/")
