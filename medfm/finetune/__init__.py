"""Fine-tuning the last N blocks end to end — not implemented yet (tracked as issue 6).

``run_finetune`` exists so the CLI verb can answer clearly instead of being absent.
"""

from medfm.errors import MedfmError


def run_finetune(*_args, **_kwargs):
    raise MedfmError(
        "`medfm finetune` is not implemented yet",
        "use `medfm extract` + `medfm probe` for frozen-backbone results; fine-tuning is planned (issue 6)",
    )
