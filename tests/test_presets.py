"""Every study preset names only registered backbones and datasets, so `medfm sweep --preset` can run it."""

import pytest

from medfm.backbones.zoo import BACKBONES
from medfm.data.zoo import DATASETS
from medfm.presets import PRESETS


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_names_only_registered_backbones_and_datasets(name):
    from medfm.backbones import is_backbone
    from medfm.data import MEDMNIST_SIZE

    preset = PRESETS.get(name)
    # registered names, or open names (timm:...) that resolve offline against their library
    assert [b for b in preset.backbones if b not in BACKBONES and not (":" in b and is_backbone(b))] == []
    base = [d.split("?")[0].split(":")[0] for d in preset.datasets]  # a MedMNIST+ size: the registered base name
    assert [d for d in base if ((m := MEDMNIST_SIZE.match(d)) and m["base"] or d) not in DATASETS] == []


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
    assert notes == ["head knn has no unfrozen rows (unfrozen heads: linear, deit, mlp)"]
    for bad, match in [({"finetune": {"seed": 1}}, "may not set seed"), ({"finetune": {"epochz": 1}}, "epochz"),
                       ({"unfreeze": [-3]}, "unfreeze"), ({"heads": ["lineer"]}, "did you mean")]:
        with pytest.raises(MedfmError, match=match):
            resolve_grid(SweepConfig(preset="huang2024", **bad))


def test_medmnist_plus_plans_its_frozen_grid_offline_with_pad_preprocessing(tmp_path):
    """MedMNIST+: 12 2D datasets x 4 sizes x its 4 published models x linear + kNN (k = 11) x 3 seeds, at 224 px
    with --resize pad; planned offline (random init stands in for weights; absent files are listed, not fatal)."""
    from medfm.config import SweepConfig
    from medfm.sweep import run_sweep

    summary = run_sweep(SweepConfig(preset="medmnist_plus", plan_only=True, results=str(tmp_path / "r.sqlite")))
    grid = summary["grid"]
    assert grid["preprocess"] == {"resize": "pad"} and grid["img_size"] == 224 and grid["heads"] == ["linear", "knn"]
    assert len(grid["datasets"]) == 48 and {"pneumoniamnist", "pneumoniamnist_64", "breastmnist_224"} <= set(grid["datasets"])
    assert summary["planned"] == 48 * 4 * 2 * 3 and summary["finetunes"]["planned"] == 0
    assert "timm:resnet18" in grid["backbones"] and summary["status"]["breastmnist/timm:resnet18"] == "ok"
    assert "not found" in summary["status"]["breastmnist_64/timm:resnet18"]  # only the 28-px files are here
