"""A two-layer MLP head, fine-tune stage only: Linear(dim -> hidden) -> ReLU -> Linear(hidden -> classes).

Study 3 (``GuanghuiFU/medical_dino_eval`` @f2b17be, ``utils.py:L368-385``) classifies DINOv2 with
``nn.Sequential(nn.Linear(1000, 256), nn.ReLU(), nn.Linear(256, categories))`` on the 1,000 ImageNet
logits of the hub's ``dinov2_vit*14_lc`` model (medfm's ``dinov2_vit*14_lc`` backbones). PyTorch's default
``nn.Linear`` initialisation, as the code's, under the run's ``--seed``; ``--mlp-hidden`` sets the width.
It trains online only: a probe would train it on cached features without the study's schedule, which the
linear probe already covers.
"""

from __future__ import annotations

from torch import nn


def for_finetune(dim: int, num_classes: int, cfg, num_tokens: int) -> nn.Module:
    hidden = int(getattr(cfg, "mlp_hidden", 256))
    return nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))
