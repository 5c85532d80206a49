"""Every study preset names only registered backbones and datasets, so `medfm sweep --preset` can run it."""

import pytest

from medfm.backbones.zoo import BACKBONES
from medfm.data.zoo import DATASETS
from medfm.presets import PRESETS


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_names_only_registered_backbones_and_datasets(name):
    preset = PRESETS.get(name)
    assert [b for b in preset.backbones if b not in BACKBONES] == []
    assert [d for d in preset.datasets if d.split("?")[0].split(":")[0] not in DATASETS] == []


@pytest.mark.parametrize("name", [n for n in PRESETS if "unfrozen" in PRESETS.get(n).scenarios])
def test_unfrozen_rows_of_a_study_preset_are_valid_finetune_runs(name):
    """Each study's unfrozen settings are FinetuneConfig keys, one fine-tune per row and fine-tune head."""
    from medfm.config import SweepConfig
    from medfm.finetune import FinetuneConfig
    from medfm.heads import heads_for
    from medfm.sweep import plan_jobs, resolve_grid

    preset = PRESETS.get(name)
    assert preset.finetune and preset.unfreeze  # the study's settings are data in the preset
    grid = resolve_grid(SweepConfig(preset=name))
    for depth in preset.unfreeze:
        FinetuneConfig(backbone="-", dataset="-", unfreeze=depth, **grid["finetune"])
    jobs, notes = plan_jobs(grid)
    finetunes = [j for j in jobs if j.kind == "finetune"]
    n_rows = len(preset.backbones) * len(preset.datasets) * len(preset.fractions) * len(preset.seeds) * len(preset.unfreeze)
    assert len(finetunes) == n_rows * len([h for h in preset.heads if h in heads_for("finetune")])
    assert len(jobs) - len(finetunes) == n_rows // len(preset.unfreeze) * len(preset.heads)
    assert {j.unfreeze for j in finetunes} == set(preset.unfreeze) and notes == []


def test_sweep_overrides_scenarios_and_finetune_settings_and_notes_probe_only_heads():
    from medfm.config import SweepConfig
    from medfm.errors import MedfmError
    from medfm.sweep import plan_jobs, resolve_grid

    cfg = SweepConfig(preset="huang2024", heads=["linear", "knn"], scenarios=["unfrozen"], unfreeze=[2, "all"],
                      finetune={"epochs": "3", "lr": 3e-5})
    grid = resolve_grid(cfg)
    assert grid["finetune"]["epochs"] == 3 and grid["finetune"]["lr"] == 3e-5  # parsed, the user's over the preset's
    assert grid["finetune"]["batch_size"] == PRESETS.get("huang2024").finetune["batch_size"]
    jobs, notes = plan_jobs(grid)
    assert {j.kind for j in jobs} == {"finetune"} and {j.head for j in jobs} == {"linear"}
    assert len(jobs) == 6 * 3 * 2  # backbones x datasets x unfreeze depths; knn has no fine-tune rows
    assert notes == ["head knn has no unfrozen rows (unfrozen heads: linear, deit)"]
    for bad, match in [({"finetune": {"seed": 1}}, "may not set seed"), ({"finetune": {"epochz": 1}}, "epochz"),
                       ({"unfreeze": [-3]}, "unfreeze"), ({"heads": ["lineer"]}, "did you mean")]:
        with pytest.raises(MedfmError, match=match):
            resolve_grid(SweepConfig(preset="huang2024", **bad))
