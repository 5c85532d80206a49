"""The probe stage: heads trained on a feature cache."""

from medfm.probe.runner import run_probe

__all__ = ["run_probe"]
