"""MobileSAM / LiteMedSAM image encoders (``medfm.backbones.tinyvit_sam``) from their SAM checkpoints.

The checkpoints hold the whole SAM model; the ``image_encoder.*`` tensors load strictly (MobileSAM's
also carry TinyViT's ImageNet classifier, loaded and then dropped). The default feature is the
SAM family's: the neck map (256 ch) averaged over H×W; ``trunk`` is the TinyViT trunk's last map.
Preprocessing is each author's own, recorded in the data config below and applied by ``sam_preprocess``.
"""

from __future__ import annotations

from medfm.backbones.features import TokenOutput
from medfm.backbones.loaders import BaseLoader, load_strict, register_loader, seeded, torch_load, wrong_weights
from medfm.backbones.sam_preprocess import LONGEST_PAD, MINMAX

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)  # Sam(pixel_mean=...), on the 0-255 scale
SAM_PIXEL_STD = (58.395, 57.12, 57.375)

# Preprocessing per model id, as the authors' inference code does it (see sam_preprocess).
TINYVIT_DATA_CONFIGS = {
    # MobileSAM: SamPredictor.set_image -> ResizeLongestSide(1024) (PIL bilinear) -> Sam.preprocess
    "tinyvit_5m_sam_1024": {
        "input_size": (3, 1024, 1024), "interpolation": "bilinear", "resize_mode": LONGEST_PAD, "crop_pct": 1.0,
        "mean": tuple(m / 255 for m in SAM_PIXEL_MEAN), "std": tuple(s / 255 for s in SAM_PIXEL_STD),
        "source": "ChaoningZhang/MobileSAM mobile_sam/predictor.py + modeling/sam.py",
    },
    # LiteMedSAM: CVPR24_LiteMedSAM_infer.py resize_longest_side(256, cv2.INTER_AREA), min-max to [0, 1], pad_image
    "tinyvit_5m_sam_256": {
        "input_size": (3, 256, 256), "interpolation": "area", "resize_mode": LONGEST_PAD, "crop_pct": 1.0,
        "normalize": MINMAX, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0),
        "source": "bowang-lab/MedSAM CVPR24_LiteMedSAM_infer.py (INTER_AREA as PIL box/bilinear)",
    },
}

TINYVIT_BLOCKS = ("layers.0.blocks,layers.0.downsample,layers.1.blocks,layers.1.downsample,"
                  "layers.2.blocks,layers.2.downsample,layers.3.blocks")


def sam_image_encoder_state(state: dict) -> dict:
    """The ``image_encoder.*`` tensors of a SAM-style checkpoint, prefix removed."""
    return {k.removeprefix("image_encoder."): v for k, v in state.items() if k.startswith("image_encoder.")}


@register_loader("tinyvit_sam")
class TinyVitSamLoader(BaseLoader):
    default_blocks = TINYVIT_BLOCKS

    def data_config(self, entry):
        return dict(TINYVIT_DATA_CONFIGS[entry.model_id])

    def build(self, entry, weights, img_size):
        from medfm.backbones.tinyvit_sam import TINYVIT_CONFIGS, TinyVitSam

        cfg = TINYVIT_CONFIGS[entry.model_id]
        state = None
        if weights.kind != "random":  # read the file first: a wrong one fails before the build
            state = sam_image_encoder_state(torch_load(weights.path))
            if not state:
                raise wrong_weights(entry, weights, "no 'image_encoder.*' keys (not a SAM-style checkpoint)")
        net = seeded(lambda: TinyVitSam(cfg))
        if state is not None:
            load_strict(net, state, entry, weights)
        net.drop_imagenet_head()
        return net

    def tokens(self, net, x):
        trunk = net.trunk(x)
        neck = net.neck(trunk)
        return TokenOutput(prefix=None, patches=neck.flatten(2).transpose(1, 2),
                           extra={"trunk": trunk.flatten(2).transpose(1, 2)})

    def block_layout(self, entry):
        return "nchw"
