"""The dataset registry: name -> where the files are and how to read them.

``overlaps_with`` records datasets that share images (e.g. BreastMNIST is BUSI downsampled), so
nothing ever trains on one copy and tests on the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from medfm.registry import Registry


@dataclass(frozen=True)
class Protocol:
    """A named way of reading a dataset (labels, split) — ``NAME:PROTOCOL`` selects it; the first is the default."""

    name: str
    description: str
    options: tuple[tuple[str, str], ...] = ()  # option defaults this protocol sets
    # A protocol may read the dataset its own way (a study's code): its own loader (key of LAYOUTS), its own file
    # (relative to the data root), its own headline metric; ``fixed`` refuses user options (the code fixes them all).
    reader: str | None = None
    location: str | None = None
    headline_metric: str | None = None
    fixed: bool = False
    # The per-channel mean/std the study's code normalises this dataset with (its hard-coded class attributes),
    # and where: ``--norm protocol`` uses them (one channel for the code's grey datasets).
    norm: tuple[tuple[float, ...], tuple[float, ...], str] | None = None


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    reader: str  # key of READERS in medfm.data
    location: str  # relative to the data root
    task: str
    classes: tuple[str, ...] | None  # None = inferred from the labels
    headline_metric: str
    modality: str
    licence: str
    overlaps_with: tuple[str, ...] = ()
    description: str = ""
    protocols: tuple[Protocol, ...] = ()  # first = default
    options: tuple[tuple[str, tuple[str, ...]], ...] = ()  # option -> allowed values ("<int>" = any integer)


DATASETS: Registry[DatasetEntry] = Registry("dataset", "medfm datasets")


def files_present(entry: DatasetEntry, root) -> str:
    """``medfm datasets``' "present" cell: whether the entry's file is under ``root``, and which protocols that
    read a file of their own (e.g. ``aptos2019:study1_code``'s train_1.csv) lack it or alone have it."""
    if root is None:
        return "no"
    main = (root / entry.location).exists()
    own = [p for p in entry.protocols if p.location]
    missing = [f":{p.name}" for p in own if not (root / p.location).exists()]
    found = [f":{p.name}" for p in own if (root / p.location).exists()]
    if main:
        return f"yes (not {', '.join(missing)})" if missing else "yes"
    return f"only {', '.join(found)}" if found else "no"


def medmnist(name, task, classes, modality, headline="roc_auc", overlaps=(), description=""):
    DATASETS.add(
        name,
        DatasetEntry(name, "medmnist", f"{name}.npz", task, tuple(classes), headline, modality, "CC BY 4.0",
                     tuple(overlaps), description or f"MedMNIST v2 {name}; add _64/_128/_224 for MedMNIST+ sizes"),
    )


ORGANS = ("bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
          "lung-left", "lung-right", "pancreas", "spleen")

medmnist("pathmnist", "multiclass", ("adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
         "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium"), "pathology")
medmnist("chestmnist", "multilabel", ("atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule",
         "pneumonia", "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"),
         "chest x-ray")
medmnist("dermamnist", "multiclass", ("actinic keratoses", "basal cell carcinoma", "benign keratosis",
         "dermatofibroma", "melanoma", "melanocytic nevi", "vascular lesions"), "dermoscopy")
medmnist("octmnist", "multiclass", ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"), "retinal OCT")
medmnist("pneumoniamnist", "binary", ("normal", "pneumonia"), "chest x-ray", overlaps=("kermany_cxr_224",),
         description="PneumoniaMNIST (Kermany pediatric CXR, 28 px); same patients as kermany_cxr_224")
medmnist("retinamnist", "multiclass", ("0", "1", "2", "3", "4"), "fundus", description="DR grades 0-4 (ordinal)")
medmnist("breastmnist", "binary", ("malignant", "normal or benign"), "ultrasound", overlaps=("busi",),
         description="BreastMNIST (BUSI downsampled, 28 px); same images as busi")
medmnist("bloodmnist", "multiclass", ("basophil", "eosinophil", "erythroblast", "immature granulocytes",
         "lymphocyte", "monocyte", "neutrophil", "platelet"), "blood smear microscopy")
medmnist("tissuemnist", "multiclass", ("collecting duct, connecting tubule", "distal convoluted tubule",
         "glomerular endothelial cells", "interstitial endothelial cells", "leukocytes", "podocytes",
         "proximal tubule segments", "thick ascending limb"), "kidney cortex microscopy")
for plane in "acs":
    medmnist(f"organ{plane}mnist", "multiclass", ORGANS, "abdominal CT")

DATASETS.add("busi", DatasetEntry(
    "busi", "manifest", "busi/labels.csv", "multiclass", ("benign", "malignant", "normal"), "roc_auc",
    "ultrasound", "CC0 (Kaggle mirror; cite Al-Dhabyani et al. 2020)", ("breastmnist",),
    "Breast ultrasound (BUSI) 256 px, no official split"))
DATASETS.add("ham10000_224", DatasetEntry(
    "ham10000_224", "manifest", "ham10000_224/labels.csv", "multiclass",
    ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"), "balanced_accuracy", "dermoscopy",
    "CC BY-NC 4.0 (non-commercial)", (), "HAM10000 / ISIC 2018 subset, 224 px, official train/test"))
DATASETS.add("kermany_cxr_224", DatasetEntry(
    "kermany_cxr_224", "manifest", "kermany_cxr_224/labels.csv", "binary", ("NORMAL", "PNEUMONIA"), "roc_auc",
    "chest x-ray", "CC BY 4.0", ("pneumoniamnist",), "Kermany pediatric CXR subset, 224 px, official train/test"))


# -- the studies' datasets, read from their official on-disk layouts (loaders in studies.py) --------------

P = Protocol
SEED = ("seed", ("<int>",))


def study(name, layout, location, task, classes, headline, modality, licence, description, protocols, options=(), **kw):
    DATASETS.add(name, DatasetEntry(name, layout, location, task, tuple(classes) if classes else None, headline, modality,
                                    licence, description=description, protocols=tuple(protocols),
                                    options=(SEED, *options), **kw))


study("aptos2019", "aptos2019", "aptos2019/train.csv", "multiclass", ("0", "1", "2", "3", "4"), "quadratic_kappa",
      "fundus", "Kaggle competition rules (research use)", "APTOS 2019 DR grades 0-4: train.csv + train_images/*.png",
      [P("study", "random 70/15/15, seed 42 (study 1)", (("split", "random"), ("seed", "42"))),
       P("stratified", "stratified 70/15/15, --split-seed", (("split", "stratified"),)),
       P("study1_code", "study 1's code: train_1.csv (defaults/datasets.py:L270), val+test = int(0.3 N) rows of "
         "random.Random(42).shuffle(range(N)) halved (bases.py:L247-262, datasets.py:L278-282)",
         reader="study1_aptos", location="aptos2019/train_1.csv", headline_metric="quadratic_kappa", fixed=True,
         norm=((0.415, 0.221, 0.073), (0.275, 0.150, 0.081), "defaults/datasets.py:L246-247"))],
      (("split", ("random", "stratified")),))
study("isic2019", "isic2019", "isic2019/ISIC_2019_Training_GroundTruth.csv", "multiclass",
      ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"), "balanced_accuracy", "dermoscopy", "CC BY-NC 4.0",
      "ISIC 2019: one-hot GroundTruth CSV + ISIC_2019_Training_Input/*.jpg; UNK rows are unknown labels",
      [P("study", "random 80/10/10, seed 42 (study 1)", (("split", "random"), ("seed", "42"), ("group", "none"))),
       P("grouped", "stratified 80/10/10 with images of one lesion together (metadata lesion_id)",
         (("split", "stratified"), ("group", "lesion"))),
       P("study1_code", "study 1's code: val+test = int(0.2 N) rows of random.Random(42).shuffle(range(N)) halved "
         "(defaults/bases.py:L247-262, datasets.py:L221-225); headline = its macro recall (datasets.py:L198)",
         reader="study1_isic", headline_metric="recall_macro", fixed=True,
         norm=((0.66776717, 0.52960888, 0.52434725), (0.22381877, 0.20363036, 0.21538623),
               "defaults/datasets.py:L185-186"))],
      (("split", ("random", "stratified")), ("group", ("none", "lesion"))))
study("cbis_ddsm", "cbis_ddsm", "cbis_ddsm", "binary", None, "roc_auc", "mammography", "CC BY 3.0 (TCIA)",
      "CBIS-DDSM: mass/calc train/test description CSVs, DICOM paths relative to the folder",
      [P("official", "official train/test CSVs, val = 15 % of train by patient",
         (("crop", "full"), ("abnormality", "both"), ("labels", "binary")))],
      (("crop", ("full", "roi")), ("abnormality", ("both", "mass", "calc")), ("labels", ("binary", "three"))))
study("chexpert", "chexpert", "CheXpert-v1.0-small/train.csv", "multilabel", None, "roc_auc", "chest x-ray",
      "Stanford CheXpert research use agreement",
      "CheXpert: train.csv/valid.csv, 14 observations, uncertain -1 by policy",
      [P("study", "14 observations, U-Zeros, path-sorted train.csv: first 10 % val, next 10 % test (study 1)",
         (("findings", "14"), ("uncertain", "zeros"), ("split", "sorted_head"), ("frontal", "false"),
          ("fill_no_finding", "true"))),
       P("official", "5 competition findings, U-Ones, test = valid.csv, val = 10 % of train by patient",
         (("findings", "5"), ("uncertain", "ones"), ("split", "official"), ("frontal", "false"),
          ("fill_no_finding", "false"))),
       P("study1_code", "study 1's code: train.csv sorted by Path, pandas .loc label slices at row int(0.2 N) + 15 "
         "and its half (defaults/datasets.py:L53-67), U-Zeros, all-zero -> No Finding (L71-76); mean AUC with 0.5 "
         "for a label without positives (utils/metrics.py:L21-39)",
         reader="study1_chexpert", headline_metric="roc_auc_study1", fixed=True,
         norm=((0.503,), (0.292,), "defaults/datasets.py:L21-22"))],
      (("findings", ("14", "5")), ("uncertain", ("zeros", "ones", "ignore")), ("split", ("sorted_head", "official")),
       ("frontal", ("false", "true")), ("fill_no_finding", ("true", "false"))))
study("ham10000", "ham10000", "HAM10000/HAM10000_metadata.csv", "multiclass",
      ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"), "balanced_accuracy", "dermoscopy", "CC BY-NC 4.0",
      "HAM10000 full download: metadata CSV + HAM10000_images_part_{1,2}/; split by lesion",
      [P("grouped", "stratified 70/15/15, images of one lesion together")])
study("idrid", "idrid", "idrid", "multiclass", ("0", "1", "2", "3", "4"), "quadratic_kappa", "fundus", "CC BY 4.0",
      "IDRiD disease grading (B. Disease Grading folder): official train/test CSVs",
      [P("official", "official train/test, val = 15 % of train")])
study("ichallenge_amd", "folder", "ichallenge_amd/Training400", "binary", ("AMD", "Non-AMD"), "roc_auc", "fundus",
      "iChallenge-AMD terms (research use)", "iChallenge-AMD Training400/{AMD,Non-AMD}/*.jpg (study 3)",
      [P("stratified", "stratified 70/15/15, --split-seed")])
study("chest_xray_pneumonia", "split_folders", "chest_xray", "binary", ("NORMAL", "PNEUMONIA"), "roc_auc", "chest x-ray",
      "CC BY 4.0", "Kermany pediatric CXR: chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg (study 3)",
      [P("official", "official train/val/test folders (val carved from train if absent)"),
       P("study3_code", "study 3's code: train/ in os.listdir order, random.Random(1).shuffle, random_split 80/20 by "
         "torch.randperm seed 1 (utils.py:L251-276, train_model.py:L4-5); test/ as test; val/ unused; headline accuracy",
         reader="study3_folders", headline_metric="accuracy", fixed=True)],
      overlaps_with=("pneumoniamnist", "kermany_cxr_224"))
study("brats_glioma", "nifti_slices", "brats", "binary", ("HGG", "LGG"), "roc_auc", "brain MRI", "BraTS data use terms",
      "glioma grading from BraTS-style <grade>/<subject>/<subject>_{t1,t2,flair,seg}.nii.gz, 2-D axial slices",
      [P("slices", "T1+T2+FLAIR as RGB, the 10 slices with most tumour (or central), subjects never straddle splits",
         (("modalities", "t1+t2+flair"), ("slices", "10")))],
      (("modalities", ("t1+t2+flair", "flair", "t1", "t2", "t1ce", "t1+t1ce+flair")), ("slices", ("<int>",))))
study("ddsm", "ddsm_lists", "DDSM", "binary", None, "roc_auc", "mammography", "DDSM terms (USF; research use)",
      "original DDSM as study 1 read it: ddsm_raw_image_lists/{train,val,test}.txt + ddsm_raw/ images",
      [P("study", "the study's fixed lists; normal vs benign+cancer (its 2-class mode)", (("labels", "binary"),)),
       P("three", "the study's fixed lists; normal / benign / cancer", (("labels", "three"),)),
       P("study1_code", "study 1's code: the lists read as pd.read_csv(sep=' ', header=None), label = exact file-name "
         "prefix, 2-class normal vs benign+cancer (defaults/datasets.py:L120-155); its roc_auc (utils/metrics.py:L104)",
         reader="study1_ddsm", headline_metric="roc_auc_study1", fixed=True,
         norm=((0.286,), (0.267,), "defaults/datasets.py:L157-163 (whole images: is_patch False)"))],
      (("labels", ("binary", "three")),))

# Short names of the study datasets, where unambiguous (`ddsm` stays the original DDSM, not CBIS-DDSM).
for _short, _name in (("isic", "isic2019"), ("aptos", "aptos2019"), ("cbis", "cbis_ddsm")):
    DATASETS.alias(_short, _name)


def known_class_count(entry: DatasetEntry) -> int | None:
    """The number of classes of the default protocol when the registry knows it without reading labels."""
    if entry.classes:
        return len(entry.classes)
    options = dict(entry.protocols[0].options) if entry.protocols else {}
    if options.get("labels") == "three":
        return 3
    if "findings" in options:  # CheXpert: the protocol fixes the observations
        return int(options["findings"])
    return 2 if entry.task == "binary" else None
