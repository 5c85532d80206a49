"""The dataset registry: name -> where the files are and how to read them.

``overlaps_with`` records datasets that share images (e.g. BreastMNIST is BUSI downsampled), so
nothing ever trains on one copy and tests on the other.
"""

from __future__ import annotations

from dataclasses import dataclass

from medfm.registry import Registry


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


DATASETS: Registry[DatasetEntry] = Registry("dataset", "medfm datasets")


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
