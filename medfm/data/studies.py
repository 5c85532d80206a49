"""Loaders for the on-disk layouts of the studies' datasets, one function per layout.

Each loader turns the files exactly as the official download lays them out into ``Row``s (path,
label, split, patient) and a ``SplitPlan``; ``manifest.build_dataset`` does the validation,
splitting and error reporting for all of them. Registry entries (``zoo.py``) name a layout and
its protocols; loaders never branch on dataset names.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medfm.data.base import Dataset
from medfm.data.manifest import FileImages, Row, SplitPlan, build_dataset, folder_rows
from medfm.data.tables import open_csv
from medfm.errors import MedfmError
from medfm.metrics import IGNORE


@dataclass
class LoadContext:
    """What every loader gets: the entry, the resolved file/folder, options and the run's choices."""

    entry: object  # DatasetEntry
    path: Path
    options: dict[str, str]
    seed: int  # --split-seed, used where the protocol does not fix one
    skip_bad: bool = False
    notes: list[str] = field(default_factory=list)
    check_images: bool | None = None  # decode every image up front (default: when skip_bad)
    duplicates: str = "warn"  # policy for identical images under two names (data/duplicates.py)
    rehash: bool = False  # read every image again instead of trusting the content-hash sidecar
    allow_missing_class: bool = False  # a class training does not see is allowed (and recorded in the identity)

    def plan(self, fractions: dict[str, float] | None = None, stratified: bool = True, val_fraction: float = 0.15) -> SplitPlan:
        seed = int(self.options["seed"]) if self.options.get("seed") else self.seed
        fr = tuple((fractions or {"train": 0.7, "val": 0.15, "test": 0.15}).items())
        return SplitPlan(fr, seed, stratified, val_fraction)

    def build(self, root: Path, rows: list[Row], manifest: Path | None, plan: SplitPlan, images=FileImages,
              classes: list[str] | None = None, task: str | None = None) -> Dataset:
        e = self.entry
        classes = classes if classes is not None else (list(e.classes) if e.classes else None)
        ds = build_dataset(e.name, root, rows, manifest, classes, e.headline_metric, plan.seed, task=task or None,
                           plan=plan, images=images, skip_bad=self.skip_bad,
                           check_images=self.check_images, duplicates=self.duplicates, rehash=self.rehash,
                           allow_missing_class=self.allow_missing_class)
        ds.notes = self.notes + ds.notes
        return ds


Loader = Callable[[LoadContext], Dataset]
LAYOUTS: dict[str, Loader] = {}


def layout(name: str):
    def wrap(fn: Loader) -> Loader:
        LAYOUTS[name] = fn
        return fn

    return wrap


def read_table(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """(line, row) pairs of a CSV whose header must hold ``required`` (whitespace and case ignored)."""
    with open_csv(path, f"{path} not found", "point --data-root at the folder holding the dataset as downloaded") as table:
        table.require(required, "this is not the official file, or it was edited; re-download it")
        out = [(line, {k.strip(): (v or "").strip() for k, v in rec.items() if k is not None})
               for line, rec in table.records()]  # line: where the row starts (CBIS-DDSM's quoted fields hold newlines)
    if not out:
        raise MedfmError(f"{path}: no rows", "re-download the file")
    return out


def col(rec: dict[str, str], name: str) -> str:
    """A column by case-insensitive name (the official CSVs are not consistent about case)."""
    for k, v in rec.items():
        if k.lower() == name.lower():
            return v
    return ""


# -- APTOS 2019 (Kaggle): train.csv (id_code, diagnosis 0-4) + train_images/<id_code>.png ---------------

@layout("aptos2019")
def load_aptos(ctx: LoadContext) -> Dataset:
    rows = [Row(f"train_images/{r['id_code']}.png", r["diagnosis"], None, line, source=ctx.path)
            for line, r in read_table(ctx.path, ("id_code", "diagnosis"))]
    stratified = ctx.options.get("split") == "stratified"
    return ctx.build(ctx.path.parent, rows, ctx.path, ctx.plan(stratified=stratified))


# -- ISIC 2019: one-hot GroundTruth CSV + ISIC_2019_Training_Input/<image>.jpg (+ metadata CSV) ---------

ISIC_METADATA = "ISIC_2019_Training_Metadata.csv"


@layout("isic2019")
def load_isic(ctx: LoadContext) -> Dataset:
    columns = (*ctx.entry.classes, "UNK")
    table = read_table(ctx.path, ("image", *columns))
    lesions = {}
    meta = ctx.path.parent / ISIC_METADATA
    if ctx.options.get("group") == "lesion":
        if not meta.is_file():
            raise MedfmError(f"{meta} not found (needed to group images of one lesion)", "download the metadata CSV too")
        lesions = {r["image"]: col(r, "lesion_id") or None for _, r in read_table(meta, ("image", "lesion_id"))}
    rows = []
    for line, r in table:
        hot = [c for c in columns if _one(r[c], ctx.path, line, c)]
        if len(hot) != 1:
            raise MedfmError(f"{ctx.path} line {line}: {len(hot)} classes marked ({', '.join(hot) or 'none'})",
                             "each GroundTruth row marks exactly one class with 1.0")
        # UNK is never used for training (the study's 8 classes): such a row is an unknown label
        rows.append(Row(f"ISIC_2019_Training_Input/{r['image']}.jpg", hot[0], None, line,
                        group=lesions.get(r["image"]), source=ctx.path))
    stratified = ctx.options.get("split") == "stratified"
    return ctx.build(ctx.path.parent, rows, ctx.path,
                     ctx.plan({"train": 0.8, "val": 0.1, "test": 0.1}, stratified=stratified))


def _one(value: str, path: Path, line: int, column: str) -> bool:
    try:
        v = float(value)
    except ValueError:
        v = -1.0
    if v not in (0.0, 1.0):
        raise MedfmError(f"{path} line {line}: column {column} is {value!r}, not 0 or 1", "re-download the file")
    return v == 1.0


# -- CBIS-DDSM: mass/calc x train/test description CSVs, DICOM paths relative to the CBIS-DDSM folder ----

CBIS_CSVS = {("mass", "train"): "mass_case_description_train_set.csv", ("mass", "test"): "mass_case_description_test_set.csv",
             ("calc", "train"): "calc_case_description_train_set.csv", ("calc", "test"): "calc_case_description_test_set.csv"}
CBIS_BINARY = {"BENIGN": "benign", "BENIGN_WITHOUT_CALLBACK": "benign", "MALIGNANT": "malignant"}
CBIS_RANK = ("benign_without_callback", "benign", "malignant")  # a full image takes its worst abnormality


@layout("cbis_ddsm")
def load_cbis(ctx: LoadContext) -> Dataset:
    kinds = ("mass", "calc") if ctx.options["abnormality"] == "both" else (ctx.options["abnormality"],)
    three = ctx.options["labels"] == "three"
    column = "image file path" if ctx.options["crop"] == "full" else "cropped image file path"
    by_path: dict[tuple[str, str], Row] = {}
    for kind in kinds:
        for split in ("train", "test"):
            csv_path = ctx.path / CBIS_CSVS[kind, split]
            for line, r in read_table(csv_path, ("patient_id", "pathology", column)):
                raw = r["pathology"].upper()
                label = raw.lower() if three else CBIS_BINARY.get(raw, raw)
                rel = col(r, column).strip().strip('"').replace("\\", "/")
                if not rel:
                    raise MedfmError(f"{csv_path} line {line}: empty '{column}'", "re-download the description CSV")
                key = (split, rel)
                old = by_path.get(key)
                if old is None or _rank(label) > _rank(old.label):
                    by_path[key] = Row(rel, label, split, old.line if old else line,
                                       group=r["patient_id"], source=old.source if old else csv_path)
    classes = ["benign_without_callback", "benign", "malignant"] if three else ["benign", "malignant"]
    ctx.notes.append(f"CBIS-DDSM {ctx.options['crop']} images of {'+'.join(kinds)}; "
                     + ("3 classes" if three else "BENIGN and BENIGN_WITHOUT_CALLBACK -> benign, MALIGNANT -> malignant"))
    rows = sorted(by_path.values(), key=lambda r: (r.split != "train", str(r.source), r.line))
    return ctx.build(ctx.path, rows, None, ctx.plan(), classes=classes)


def _rank(label: str) -> int:
    return CBIS_RANK.index(label) if label in CBIS_RANK else -1


# -- CheXpert: train.csv / valid.csv, Path + Frontal/Lateral + 14 observations (1, 0, -1 uncertain, blank) ---

CHEXPERT_PATIENT = re.compile(r"(patient\d+)")
UNCERTAIN = {"zeros": 0, "ones": 1, "ignore": IGNORE}


@layout("chexpert")
def load_chexpert(ctx: LoadContext) -> Dataset:
    observations = list(ctx.options["findings"].split("|")) if "|" in ctx.options["findings"] else None
    observations = observations or list(CHEXPERT_FINDINGS[ctx.options["findings"]])
    root = ctx.path.parent.parent  # Path column starts with the CheXpert-v1.0(-small) folder
    policy = ctx.options["uncertain"]
    frontal = ctx.options["frontal"] == "true"
    rows = _chexpert_rows(ctx.path, observations, policy, frontal)
    if ctx.options["fill_no_finding"] == "true" and "No Finding" in observations:
        k = observations.index("No Finding")  # the study: a row with no positive at all is 'No Finding'
        for r in rows:
            if not any(r.targets):
                r.targets = tuple(1 if j == k else 0 for j in range(len(observations)))
        ctx.notes.append("rows without any positive -> No Finding = 1 (as the study's code)")
    if ctx.options["split"] == "sorted_head":  # the study: path-sorted train.csv, first 20 % -> val | test
        rows.sort(key=lambda r: r.path)
        cut_val, cut_test = _patient_boundary(rows, 0.1), _patient_boundary(rows, 0.2)
        for i, r in enumerate(rows):
            r.split = "val" if i < cut_val else "test" if i < cut_test else "train"
        ctx.notes.append("train.csv sorted by Path; first 10 % -> val, next 10 % -> test (cut at patient boundaries)")
    else:  # official: valid.csv is the test set, val carved from train by patient
        for r in rows:
            r.split = "train"
        test = _chexpert_rows(ctx.path.parent / "valid.csv", observations, policy, frontal)
        for r in test:
            r.split = "test"
        rows += test
        ctx.notes.append("official: train.csv -> train (+10 % val by patient), valid.csv -> test")
    ctx.notes.append(f"uncertain (-1) -> {policy}{' (masked in loss and metrics)' if policy == 'ignore' else ''}; "
                     f"blank -> 0{'; frontal views only' if frontal else ''}")
    return ctx.build(root, rows, None, ctx.plan(val_fraction=0.1), classes=observations, task="multilabel")


def _chexpert_rows(path: Path, observations: list[str], policy: str, frontal: bool) -> list[Row]:
    rows = []
    for line, r in read_table(path, ("Path", "Frontal/Lateral", *observations)):
        if frontal and r["Frontal/Lateral"] != "Frontal":
            continue
        targets = []
        for obs in observations:
            v = r[obs]
            if v in ("", "0", "0.0"):
                targets.append(0)
            elif v in ("1", "1.0"):
                targets.append(1)
            elif v in ("-1", "-1.0"):
                targets.append(UNCERTAIN[policy])
            else:
                raise MedfmError(f"{path} line {line}: {obs} is {v!r}, not 1, 0, -1 or blank", "re-download the file")
        m = CHEXPERT_PATIENT.search(r["Path"])
        rows.append(Row(r["Path"], "", None, line, group=m.group(1) if m else None, targets=tuple(targets), source=path))
    return rows


def _patient_boundary(rows: list[Row], fraction: float) -> int:
    """The first index at or after ``fraction`` of the rows where a new patient starts."""
    k = int(round(len(rows) * fraction))
    while 0 < k < len(rows) and rows[k].group is not None and rows[k].group == rows[k - 1].group:
        k += 1
    return k


CHEXPERT_FINDINGS = {
    "14": ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
           "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
           "Fracture", "Support Devices"),
    "5": ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion"),
}


# -- HAM10000: HAM10000_metadata.csv (lesion_id, image_id, dx) + HAM10000_images_part_{1,2}/<image_id>.jpg ---

HAM_IMAGE_DIRS = ("HAM10000_images_part_1", "HAM10000_images_part_2", "HAM10000_images", "images")


@layout("ham10000")
def load_ham(ctx: LoadContext) -> Dataset:
    root = ctx.path.parent
    dirs = [d for d in HAM_IMAGE_DIRS if (root / d).is_dir()]
    rows = []
    for line, r in read_table(ctx.path, ("lesion_id", "image_id", "dx")):
        name = f"{r['image_id']}.jpg"
        where = next((d for d in dirs if (root / d / name).is_file()), dirs[0] if dirs else HAM_IMAGE_DIRS[0])
        rows.append(Row(f"{where}/{name}", r["dx"], None, line, group=r["lesion_id"] or None, source=ctx.path))
    ctx.notes.append("images of one lesion (lesion_id) stay in one split")
    return ctx.build(root, rows, ctx.path, ctx.plan())


# -- IDRiD disease grading: Groundtruths CSVs ("Image name", "Retinopathy grade") + Original Images ---------

IDRID_PARTS = {"train": ("a. IDRiD_Disease Grading_Training Labels.csv", "a. Training Set"),
               "test": ("b. IDRiD_Disease Grading_Testing Labels.csv", "b. Testing Set")}


@layout("idrid")
def load_idrid(ctx: LoadContext) -> Dataset:
    rows = []
    for split, (csv_name, img_dir) in IDRID_PARTS.items():
        csv_path = ctx.path / "2. Groundtruths" / csv_name
        for line, r in read_table(csv_path, ("Image name", "Retinopathy grade")):
            rows.append(Row(f"1. Original Images/{img_dir}/{col(r, 'Image name')}.jpg", col(r, "Retinopathy grade"),
                            split, line, source=csv_path))
    return ctx.build(ctx.path, rows, None, ctx.plan())


# -- image folders: <class>/<image> (iChallenge-AMD), and <split>/<class>/<image> (Kermany chest_xray) -------

@layout("folder")
def load_folder(ctx: LoadContext) -> Dataset:
    return ctx.build(ctx.path, folder_rows(ctx.path), None, ctx.plan())


@layout("split_folders")
def load_split_folders(ctx: LoadContext) -> Dataset:
    rows = []
    for split_dir in sorted(d for d in ctx.path.iterdir() if d.is_dir() and not d.name.startswith(".")):
        split = {"train": "train", "val": "val", "test": "test"}.get(split_dir.name.lower())
        if split is None:
            raise MedfmError(f"{split_dir}: expected split folders train/, val/, test/", "remove or rename the folder")
        for r in folder_rows(split_dir):
            rows.append(Row(f"{split_dir.name}/{r.path}", r.label, split, 0))
    return ctx.build(ctx.path, rows, None, ctx.plan())


# -- NIfTI 2-D slices (glioma grading, BraTS layout <grade>/<subject>/<subject>_{t1,t2,flair,seg}.nii.gz) ----

class SliceImages:
    """Axial slices of co-registered volumes, one volume per channel (T1, T2, FLAIR -> R, G, B)."""

    def __init__(self, root: Path, rows: list[Row], manifest, modalities: tuple[str, ...]):
        self.root, self.rows, self.modalities = root, rows, modalities

    def __len__(self) -> int:
        return len(self.rows)

    def files(self, i: int) -> list[Path]:
        d = self.root / self.rows[i].path
        return [_modality_file(d, m) for m in self.modalities]

    def load(self, i: int):
        from medfm.data.images import ImageReadError
        from medfm.data.medical import stack_slices

        files = self.files(i)
        try:
            return stack_slices(files, self.rows[i].frame)
        except Exception as exc:
            raise ImageReadError(files[0].parent, f"cannot read slice {self.rows[i].frame} ({type(exc).__name__}: {exc})",
                                 "replace or remove this subject's volumes") from None

    def describe(self, i: int) -> str:
        return f"{self.root / self.rows[i].path} slice {self.rows[i].frame}"


def _modality_file(subject: Path, modality: str) -> Path:
    for suffix in (".nii.gz", ".nii"):
        p = subject / f"{subject.name}_{modality}{suffix}"
        if p.is_file():
            return p
    raise MedfmError(f"{subject}: no {subject.name}_{modality}.nii.gz", "every subject needs one volume per modality")


@layout("nifti_slices")
def load_nifti_slices(ctx: LoadContext) -> Dataset:
    from medfm.data.medical import _volume, nifti_depth

    modalities = tuple(ctx.options["modalities"].split("+"))
    per_subject = int(ctx.options["slices"])
    rows = []
    for grade in sorted(d for d in ctx.path.iterdir() if d.is_dir() and not d.name.startswith(".")):
        for subject in sorted(d for d in grade.iterdir() if d.is_dir()):
            files = [_modality_file(subject, m) for m in modalities]
            depth = nifti_depth(files[0])
            seg = [p for p in (subject / f"{subject.name}_seg.nii.gz", subject / f"{subject.name}_seg.nii") if p.is_file()]
            if seg:  # the slices with the most tumour, as glioma-grading studies pick them
                area = (np.asarray(_volume(str(seg[0]))) > 0).sum(axis=(0, 1))
                picked = sorted(np.argsort(-area, kind="stable")[:per_subject].tolist())
            else:  # the central slices
                start = max(0, depth // 2 - per_subject // 2)
                picked = list(range(start, min(depth, start + per_subject)))
            rows += [Row(f"{grade.name}/{subject.name}", grade.name, None, 0, group=subject.name, frame=int(k))
                     for k in picked]
    if not rows:
        raise MedfmError(f"{ctx.path}: no <grade>/<subject>/ folders", "lay volumes out as <grade>/<subject>/<subject>_<modality>.nii.gz")
    ctx.notes.append(f"{per_subject} axial slices per subject ({'+'.join(modalities)} as channels); subjects never straddle splits")
    images = lambda root, rows, manifest: SliceImages(root, rows, manifest, modalities)  # noqa: E731
    return ctx.build(ctx.path, rows, None, ctx.plan(), images=images)


# -- DDSM as study 1 read it: ddsm_raw_image_lists/{train,val,test}.txt, label = file-name prefix ----------

DDSM_PREFIX = {"normal": "normal", "benign": "benign", "cancer": "cancer"}


def ddsm_list_lines(root: Path):
    """Every line of the study's DDSM lists, as (split, list file, 1-based line number, text without its
    newline); a missing list is one error. Each reader parses the lines its own way (this lenient one,
    ``study1_code``'s as strictly as the code's ``pd.read_csv``)."""
    for split in ("train", "val", "test"):
        lst = root / "ddsm_raw_image_lists" / f"{split}.txt"
        if not lst.is_file():
            raise MedfmError(f"{lst} not found", "the study's DDSM folder holds ddsm_raw_image_lists/{train,val,test}.txt")
        for line, text in enumerate(lst.read_text().splitlines(), start=1):
            yield split, lst, line, text


@layout("ddsm_lists")
def load_ddsm_lists(ctx: LoadContext) -> Dataset:
    two = ctx.options["labels"] == "binary"  # the study's 2-class mode: normal vs benign + cancer
    rows = []
    for split, lst, line, text in ddsm_list_lines(ctx.path):
        rel = text.strip().split(" ")[0]
        if not rel:
            continue
        prefix = Path(rel).name.split("_")[0].lower()
        label = DDSM_PREFIX.get(prefix, prefix)
        if two and label in ("benign", "cancer"):
            label = "abnormal"
        rows.append(Row(f"ddsm_raw/{rel}", label, split, line, source=lst))
    classes = ["normal", "abnormal"] if two else ["normal", "benign", "cancer"]
    ctx.notes.append("labels from the file-name prefix (normal_/benign_/cancer_)"
                     + ("; benign and cancer -> abnormal, as the study's 2-class code does" if two else ""))
    return ctx.build(ctx.path, rows, None, ctx.plan(), classes=classes)
