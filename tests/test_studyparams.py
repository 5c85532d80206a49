"""`medfm run --params params.json` (study 1's layout) and `medfm run --config` (medfm's own), end to end
on a tiny APTOS tree with a randomly initialised DINOv2 ViT-S/14 at 28 px."""

import copy
import json

import pytest
from dataset_trees import aptos_tree
from typer.testing import CliRunner

from medfm.errors import MedfmError
from medfm.studyparams import STUDY_BACKBONES, map_params

# study 1's params.json (sajjad-sh33/Medical-Transfer-Learning), trimmed of repeated transform blocks
STUDY_PARAMS = {
    "dataset_params": {
        "dataset": "APTOS2019", "data_location": "./",
        "train_transforms": {"Resize": {"apply": True, "height": 256, "width": 256},
                             "CenterCrop": {"apply": True, "height": 224, "width": 224}, "Normalize": True,
                             "HorizontalFlip": {"apply": True, "p": 0.5},
                             "ColorJitter": {"apply": True, "brightness": 0.2, "contrast": 0.2, "saturation": 0.1,
                                             "hue": 0.1, "p": 0.8},
                             "RandomResizedCrop": {"apply": True, "size": 224, "scale": [0.8, 1.2]}},
        "val_transforms": {"Resize": {"apply": True, "height": 256, "width": 256}, "Normalize": True},
        "test_transforms": {"Resize": {"apply": True, "height": 256, "width": 256}, "Normalize": True},
    },
    "dataloader_params": {"trainloader": {"batch_size": 8, "num_workers": 0, "prefetch_factor": 4, "shuffle": True,
                                          "pin_memory": True, "drop_last": True, "persistent_workers": True},
                          "valloader": {"batch_size": 64, "num_workers": 1}, "testloader": {"batch_size": 64}},
    "model_params": {"backbone_type": "none", "cnn_params": {"pretrained_type": "supervised"},
                     "transformers_params": {"img_size": [224], "patch_size": 16, "pretrained_type": "supervised",
                                             "is_memory_efficient": False},
                     "pretrained": True, "freeze_backbone": False},
    "foundation_params": {"backbone_type": "dinov2_vits14", "img_size": 28, "pretrained": False, "freeze_backbone": True,
                          "partial": {"unfreeze_cutoff": -1, "drop_cutoff": []}},
    "optimization_params": {"default": {"optimizer": {"type": "AdamW", "autoscale_lr": False,
                                                      "params": {"lr": 1e-3, "weight_decay": 1e-5}},
                                        "LARS_params": {"use": False},
                                        "scheduler": {"type": ["LinearWarmup"],
                                                      "params": {"LinearWarmup": {"warmup_epochs": 0, "warmup_iters": 1000}}}}},
    "training_params": {"model_name": "DINOv2_S_APTOS", "epochs": 5, "val_every": 1, "log_every": 1,
                        "save_best_model": True, "grad_clipping": 1.0, "use_mixed_precision": True, "save_dir": "results"},
    "system_params": {"use_all_GPUs": False, "which_GPUs": "0", "use_GPU": False},
    "log_params": {"project_name": "medical_foundation", "run_name": "DEFINED_BY_MODEL_NAME"},
    "lr_finder": {"type": "grid_search", "grid_search_params": {"min_pow": -5, "max_pow": -2}},
    "transfer_learning_params": {"use_pretrained": False, "pretrained_model_name": "", "pretrained_path": ""},
}


def write_params(tmp_path, params):
    path = tmp_path / "params.json"
    path.write_text(json.dumps(params))
    return path


@pytest.fixture
def study(tmp_path, monkeypatch):
    aptos_tree(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEDFM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MEDFM_RUNS", str(tmp_path / "runs"))
    params = copy.deepcopy(STUDY_PARAMS)
    params["dataset_params"]["data_location"] = str(tmp_path / "data")
    return params


def test_params_json_frozen_runs_extract_and_probe_and_accounts_for_every_key(tmp_path, study):
    from medfm.cli import app

    res = CliRunner().invoke(app, ["run", "--params", str(write_params(tmp_path, study)), "--json"])
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout[res.stdout.index("{"):])
    assert record["backbone"] == "dinov2_vits14" and record["dataset"] == "aptos2019" and record["head"] == "linear"
    assert record["weights"] == "random:seed=0" and record["img_size"] == 28
    assert record["headline_metric"]["name"] == "quadratic_kappa"
    assert record["n"] == {"train": 13, "val": 4, "test": 3}  # the study's random 70/15/15, seed 42
    assert record["hyperparameters"] == {"lr": 1e-3, "weight_decay": 1e-5}  # the study's optimiser settings
    assert record["out"].endswith("results/DINOv2_S_APTOS")
    used, ignored = record["params"]["used"], record["params"]["ignored"]
    assert record["params"]["mode"] == "probe"
    assert used["foundation_params.backbone_type"] == "backbone = dinov2_vits14"
    assert used["model_params.backbone_type"] == "head = linear"
    assert used["training_params.epochs"] == "probe.epochs = 5"
    for key in ("dataset_params.train_transforms", "lr_finder", "log_params", "transfer_learning_params",
                "training_params.use_mixed_precision", "optimization_params.default.scheduler", "model_params.cnn_params"):
        assert key in ignored, (key, ignored)
    assert "medfm uses each backbone's own preprocessing" in ignored["dataset_params.val_transforms"]

    # medfm's native config runs the same stages; the extract cache is reused
    native = {"extract": {"backbone": "dinov2_vits14", "dataset": "aptos2019", "weights": "random", "img_size": 28,
                          "data_root": str(tmp_path / "data"), "num_workers": 0},
              "probe": {"epochs": 5, "lrs": [1e-3], "wds": [1e-5], "out": str(tmp_path / "native")}}
    (tmp_path / "run.json").write_text(json.dumps(native))
    res = CliRunner().invoke(app, ["run", "--config", str(tmp_path / "run.json"), "--json"])
    assert res.exit_code == 0, res.output
    again = json.loads(res.stdout[res.stdout.index("{"):])
    assert again["extract"]["reused"] and again["test"] == record["test"]


def test_params_mapping_of_heads_unfreezing_and_unknown_models(tmp_path, study, monkeypatch):
    study["model_params"]["backbone_type"] = "deit_base"
    run = map_params(write_params(tmp_path, study))
    assert run.probe["head"] == "deit" and run.extract["tokens"] is True
    study["foundation_params"]["partial"]["unfreeze_cutoff"] = 9  # blocks 9..11 of ViT-S/14's 12 train
    run = map_params(write_params(tmp_path, study))
    assert run.mode == "finetune" and run.finetune["unfreeze"] == 3 and run.finetune["head"] == "deit"
    assert run.finetune["warmup_steps"] == 1000 and run.finetune["amp"] is True and run.finetune["grad_clip"] == 1.0
    study["foundation_params"]["freeze_backbone"] = False
    assert map_params(write_params(tmp_path, study)).finetune["unfreeze"] == "all"
    study["foundation_params"]["backbone_type"] = "vmamba_tiny"
    with pytest.raises(MedfmError, match=r"backbone_type 'vmamba_tiny' is not a study-1 model medfm knows"):
        map_params(write_params(tmp_path, study))
    monkeypatch.setitem(STUDY_BACKBONES, "future-model-224", "future_model")
    study["foundation_params"]["backbone_type"] = "future-model-224"
    with pytest.raises(MedfmError, match=r"maps to medfm backbone 'future_model', which this medfm's registry does not"):
        map_params(write_params(tmp_path, study))
    study["model_params"]["backbone_type"] = "vit_head"
    study["foundation_params"]["backbone_type"] = "dinov2_vits14"
    with pytest.raises(MedfmError, match=r"model_params.backbone_type 'vit_head' is not a head"):
        map_params(write_params(tmp_path, study))


def test_params_json_unfrozen_runs_a_finetune(tmp_path, study):
    finetune = pytest.importorskip("medfm.finetune")
    if not hasattr(finetune, "FinetuneConfig"):
        pytest.skip("medfm.finetune.FinetuneConfig is not on this branch yet (the finetune helper's issue 6 merges it)")
    from medfm.studyparams import run_study_params

    study["foundation_params"]["partial"]["unfreeze_cutoff"] = 11  # the last block of ViT-S/14 trains
    study["training_params"]["epochs"] = 1
    study["optimization_params"]["default"]["scheduler"]["params"]["LinearWarmup"]["warmup_iters"] = 0
    record = run_study_params(write_params(tmp_path, study))
    assert record["kind"] == "finetune" and record["params"]["mode"] == "finetune"
    assert record["backbone"] == "dinov2_vits14" and record["dataset"] == "aptos2019"
    assert record["n"]["test"] == 3 and record["headline_metric"]["name"] == "quadratic_kappa"
    assert record["params"]["used"]["foundation_params.partial.unfreeze_cutoff"] == "finetune.unfreeze = 1"


def test_every_study_model_name_maps_to_a_registered_backbone():
    from medfm.backbones.zoo import BACKBONES
    from medfm.studyparams import STUDY_BACKBONES

    assert [v for v in STUDY_BACKBONES.values() if v not in BACKBONES] == []
