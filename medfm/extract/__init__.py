"""The extract stage: backbone x dataset -> feature cache."""

from medfm.extract.runner import ExtractResult, run_extract

__all__ = ["ExtractResult", "run_extract"]
