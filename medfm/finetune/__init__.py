"""The fine-tune stage: unfreeze the last N blocks of a backbone and train it end to end with a head.

``run_finetune(FinetuneConfig(...))`` returns the result record (same schema as the probe's,
``kind="finetune"``, plus the per-epoch ``history``); see ``runner.py``.
"""

from medfm.config import FinetuneConfig
from medfm.finetune.runner import run_finetune

__all__ = ["FinetuneConfig", "run_finetune"]
