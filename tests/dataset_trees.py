"""Writers of tiny dataset trees in the real on-disk layouts (real PNG/JPEG, DICOM, NIfTI, CSV)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image


def write_png(path: Path, value: int, size=(24, 20), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
    return path


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_dicom(path: Path, pixels: np.ndarray, photometric="MONOCHROME2", slope=None, intercept=None,
                window=None, patient="P0") -> Path:
    """A real single-frame DICOM file (Secondary Capture, explicit VR little endian) written by pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientID = patient
    ds.Modality = "MG"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = ds.BitsStored = 16 if pixels.dtype == np.uint16 else 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if slope is not None:
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def write_nifti(path: Path, volume: np.ndarray) -> Path:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(volume.astype(np.float32), np.eye(4)), str(path))
    return path


# -- whole trees in the official layouts ---------------------------------------------------------------

APTOS_GRADES = [0] * 6 + [1] * 4 + [2] * 4 + [3] * 3 + [4] * 3


def aptos_tree(root: Path) -> Path:
    d = root / "aptos2019"
    ids = [f"{i:03x}ab{i:02d}" for i in range(len(APTOS_GRADES))]
    for i, code in enumerate(ids):
        write_png(d / "train_images" / f"{code}.png", i)
    write_csv(d / "train.csv", ["id_code", "diagnosis"], [[c, g] for c, g in zip(ids, APTOS_GRADES)])
    return d


ISIC_CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC"]


def isic_tree(root: Path, per_class: int = 4, unk: bool = False) -> Path:
    d = root / "isic2019"
    rows, meta = [], []
    k = 0
    for c in range(len(ISIC_CLASSES)):
        for j in range(per_class):
            name = f"ISIC_{k:07d}"
            write_png(d / "ISIC_2019_Training_Input" / f"{name}.jpg", k)
            rows.append([name] + [f"{float(i == c)}" for i in range(8)] + ["0.0"])
            meta.append([name, 50, "anterior torso", f"BCN_{c:03d}{j // 2}" if j < 2 else "", "male"])
            k += 1
    if unk:
        write_png(d / "ISIC_2019_Training_Input" / "ISIC_9999999.jpg", 99)
        rows.append(["ISIC_9999999"] + ["0.0"] * 8 + ["1.0"])
        meta.append(["ISIC_9999999", 40, "", "", "female"])
    write_csv(d / "ISIC_2019_Training_GroundTruth.csv", ["image", *ISIC_CLASSES, "UNK"], rows)
    write_csv(d / "ISIC_2019_Training_Metadata.csv", ["image", "age_approx", "anatom_site_general", "lesion_id", "sex"], meta)
    return d


CBIS_HEADER = ["patient_id", "breast_density", "left or right breast", "image view", "abnormality id", "abnormality type",
               "mass shape", "mass margins", "assessment", "pathology", "subtlety", "image file path",
               "cropped image file path", "ROI mask file path"]

# (csv kind, split, patient, side/view, abnormality id, pathology)
CBIS_ROWS = [
    ("mass", "train", "P_00001", "LEFT_CC", 1, "MALIGNANT"),
    ("mass", "train", "P_00001", "LEFT_CC", 2, "BENIGN"),  # same full image, second abnormality
    ("mass", "train", "P_00004", "LEFT_MLO", 1, "BENIGN"),
    ("mass", "train", "P_00009", "RIGHT_CC", 1, "BENIGN_WITHOUT_CALLBACK"),
    ("mass", "train", "P_00011", "RIGHT_MLO", 1, "MALIGNANT"),
    ("calc", "train", "P_00005", "RIGHT_CC", 1, "MALIGNANT"),
    ("calc", "train", "P_00007", "LEFT_CC", 1, "BENIGN_WITHOUT_CALLBACK"),
    ("calc", "train", "P_00008", "LEFT_MLO", 1, "BENIGN"),
    ("mass", "test", "P_00016", "LEFT_CC", 1, "MALIGNANT"),
    ("mass", "test", "P_00017", "LEFT_MLO", 1, "BENIGN"),
    ("calc", "test", "P_00038", "LEFT_CC", 1, "BENIGN_WITHOUT_CALLBACK"),
    ("calc", "test", "P_00041", "RIGHT_CC", 1, "MALIGNANT"),
]


def cbis_tree(root: Path) -> Path:
    import numpy as np

    d = root / "cbis_ddsm"
    from collections import defaultdict

    tables = defaultdict(list)
    for k, (kind, split, patient, view, abn, pathology) in enumerate(CBIS_ROWS):
        prefix = f"{'Mass' if kind == 'mass' else 'Calc'}-{'Training' if split == 'train' else 'Test'}_{patient}_{view}"
        full = f"{prefix}/1.3.6.1.4.1.9590.100.1.2.{k}/1.3.6.1.4.1.9590.100.1.2.{k}1/000000.dcm"
        crop = f"{prefix}_{abn}/1.3.6.1.4.1.9590.100.1.2.{k}2/1.3.6.1.4.1.9590.100.1.2.{k}3/000001.dcm"
        if abn == 2:  # the second abnormality is on the first row's full mammogram
            full = tables[(kind, split)][-1][11]
        rng = np.random.default_rng(k)
        px = rng.integers(0, 4096, (12, 10), dtype=np.uint16)
        if not (d / full).exists():
            write_dicom(d / full, px, "MONOCHROME1" if k % 2 else "MONOCHROME2", slope=1, intercept=0, patient=patient)
        write_dicom(d / crop, px[:6, :6].copy(), patient=patient)
        tables[(kind, split)].append([patient, 3, view.split("_")[0], view.split("_")[1], abn, kind, "OVAL", "CIRCUMSCRIBED",
                                      4, pathology, 3, full, crop + "\n", crop.replace("000001", "000000")])
    for (kind, split), rows in tables.items():
        write_csv(d / f"{kind}_case_description_{split}_set.csv", CBIS_HEADER, rows)
    return d


CHEXPERT_OBS = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
                "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
                "Fracture", "Support Devices"]


def chexpert_value(p: int, s: int, v: int, j: int) -> str:
    """A deterministic label pattern: every observation gets positives, negatives, uncertains and blanks."""
    code = (p * 7 + s * 3 + v + j * 5) % 5
    return ["1.0", "0.0", "-1.0", "", "1.0"][code]


def chexpert_tree(root: Path, patients: int = 10) -> Path:
    d = root / "CheXpert-v1.0-small"
    header = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_OBS]
    rows = []
    for p in range(patients, 0, -1):  # written unsorted: the study sorts by Path
        for s in (1, 2):
            for v, view in ((1, "frontal"), (2, "lateral")):
                path = f"CheXpert-v1.0-small/train/patient{p:05d}/study{s}/view{v}_{view}.jpg"
                write_png(root / path, p * 10 + s * 2 + v, mode="L")
                rows.append([path, "Female", 60, "Frontal" if v == 1 else "Lateral", "AP" if v == 1 else "",
                             *[chexpert_value(p, s, v, j) for j in range(14)]])
    write_csv(d / "train.csv", header, rows)
    valid = []
    for p in range(64541, 64545):
        path = f"CheXpert-v1.0-small/valid/patient{p}/study1/view1_frontal.jpg"
        write_png(root / path, p, mode="L")
        valid.append([path, "Male", 70, "Frontal", "PA", *[str(float((p + j) % 2)) for j in range(14)]])
    write_csv(d / "valid.csv", header, valid)
    return d


HAM_CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def ham_tree(root: Path) -> Path:
    d = root / "HAM10000"
    rows, k = [], 0
    for c, dx in enumerate(HAM_CLASSES):
        for lesion in range(3):
            for _ in range(2 if lesion == 0 else 1):  # the first lesion of each class has two images
                part = "HAM10000_images_part_1" if k % 2 == 0 else "HAM10000_images_part_2"
                write_png(d / part / f"ISIC_{k:07d}.jpg", k)
                rows.append([f"HAM_{c}{lesion:06d}", f"ISIC_{k:07d}", dx, "histo", 45, "male", "back"])
                k += 1
    write_csv(d / "HAM10000_metadata.csv", ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"], rows)
    return d


def idrid_tree(root: Path) -> Path:
    d = root / "idrid"
    for split, csv_name, img_dir, n in (("train", "a. IDRiD_Disease Grading_Training Labels.csv", "a. Training Set", 15),
                                         ("test", "b. IDRiD_Disease Grading_Testing Labels.csv", "b. Testing Set", 5)):
        rows = []
        for i in range(n):
            name = f"IDRiD_{i + 1:03d}"
            write_png(d / "1. Original Images" / img_dir / f"{name}.jpg", i + (100 if split == "test" else 0))
            rows.append([name, i % 5, i % 3])
        write_csv(d / "2. Groundtruths" / csv_name, ["Image name", "Retinopathy grade", "Risk of macular edema "], rows)
    return d


def amd_tree(root: Path) -> Path:
    d = root / "ichallenge_amd" / "Training400"
    for i in range(8):
        write_png(d / ("AMD" if i < 3 else "Non-AMD") / f"{'A' if i < 3 else 'N'}{i:04d}.jpg", i)
    return d


def chest_xray_tree(root: Path) -> Path:
    d = root / "chest_xray"
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        for cls in ("NORMAL", "PNEUMONIA"):
            for i in range(n):
                name = f"IM-{i:04d}-0001.jpeg" if cls == "NORMAL" else f"person{i}_bacteria_{i}.jpeg"
                write_png(d / split / cls / name, i, mode="L")
    return d


def brats_tree(root: Path, subjects=(("HGG", 4), ("LGG", 3)), depth: int = 6) -> Path:
    import numpy as np

    d = root / "brats"
    for grade, n in subjects:
        for i in range(n):
            sid = f"Brats18_{grade}_{i:03d}"
            rng = np.random.default_rng(hash((grade, i)) % 2**32)
            for mod in ("t1", "t2", "flair", "t1ce"):
                write_nifti(d / grade / sid / f"{sid}_{mod}.nii.gz", rng.random((8, 8, depth)) * 1000)
            seg = np.zeros((8, 8, depth))
            seg[2:5, 2:5, 1] = 1  # tumour largest on slice 1, then slice 4
            seg[3:4, 3:5, 4] = 2
            write_nifti(d / grade / sid / f"{sid}_seg.nii.gz", seg)
    return d


def ddsm_tree(root: Path) -> Path:
    d = root / "DDSM"
    lists = {"train": ["normal_01.png", "benign_02.png", "cancer_03.png", "normal_04.png", "cancer_05.png"],
             "val": ["normal_06.png", "benign_07.png"], "test": ["cancer_08.png", "normal_09.png", "benign_10.png"]}
    for i, (split, names) in enumerate(lists.items()):
        for j, name in enumerate(names):
            write_png(d / "ddsm_raw" / "cases" / name, i * 10 + j, mode="L")
        (d / "ddsm_raw_image_lists").mkdir(parents=True, exist_ok=True)
        (d / "ddsm_raw_image_lists" / f"{split}.txt").write_text("".join(f"cases/{n}\n" for n in names))
    return d
