"""The probe stage: heads trained on a feature cache."""

from medfm.probe.heads import HEADS
from medfm.probe.linear import LinearProbe
from medfm.probe.runner import run_probe

__all__ = ["HEADS", "LinearProbe", "run_probe"]
