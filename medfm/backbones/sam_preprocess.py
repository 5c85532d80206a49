"""The SAM family's own image preprocessing, which timm's resize-and-crop cannot express.

SAM and MobileSAM (``SamPredictor.set_image``: ``ResizeLongestSide`` then ``Sam.preprocess``)
resize the longest side to the model size, normalise with ``pixel_mean``/``pixel_std`` on the
0-255 scale and pad bottom/right with zeros to a square. LiteMedSAM (``CVPR24_LiteMedSAM_infer.py``)
resizes the longest side to 256 with OpenCV's ``INTER_AREA``, min-max scales the whole image to
[0, 1] and pads bottom/right with zeros. MedSAM (``MedSAM_Inference.py``) squashes to 1024×1024
with a cubic resize and min-max scales. ``data_config`` records which of these a backbone uses.

These are resize policies of ``medfm.backbones.preprocess`` (``sam_longest_pad``, ``sam_squash``),
the same abstraction as ``--resize squash / pad``; ``SamTransform`` builds that policy's transform.
"""

from __future__ import annotations

from medfm.backbones.preprocess import (  # noqa: F401 - the names the SAM loaders and tests use
    LONGEST_PAD, MINMAX, RESIZE_POLICIES, _longest_side_shape, _resize, policy_transform, sam_family_policy,
)

SQUASH = "squash"  # both sides -> size


def SamTransform(data_config: dict, size: int):  # noqa: N802 - kept as the class it was
    """PIL RGB image -> float ``[3, size, size]`` as the SAM-family authors prepare it (see module doc)."""
    return policy_transform(RESIZE_POLICIES.get(sam_family_policy(data_config) or "sam_squash"), size, data_config)
