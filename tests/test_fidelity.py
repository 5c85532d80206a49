"""Issue 17's fidelity mapping: ``--fidelity exact|fast`` for `medfm run --params` and the study presets.

Mapping only (dry-runs and plans, no model built, nothing trained): the study's own params.json
(tests/data/study1_params.json, copied from sajjad-sh33/Medical-Transfer-Learning @02db977, see
study1_params.SOURCE.json) maps, in exact mode, every setting of the issue's list to an option with the
code location it follows; fast lists what differs; each preset's exact plan runs frozen and DeiT-head
rows with unfreeze 0.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
from pathlib import Path

import pytest

from medfm.config import SweepConfig
from medfm.errors import MedfmError
from medfm.fidelity import STUDIES, STUDY1, STUDY3
from medfm.presets import PRESETS
from medfm.results import ResultsStore
from medfm.studyparams import STUDY_BACKBONES, WHY_IGNORED, _backbone, map_params
from medfm.sweep import exact_settings, plan_jobs, resolve_grid, run_sweep

PARAMS = Path(__file__).parent / "data" / "study1_params.json"
# the issue's list (issue 17, "Reproduce the studies as their code ran them"): setting keys of STUDY1
ISSUE_LIST = ("deit_init", "deit_frozen", "coca_tokens", "clip_weights", "ddsm", "squash", "norm", "grey_stem",
              "online_frozen", "augment", "optimizer", "schedule", "warmup", "best_on_val", "splits", "metrics",
              "no_decay", "drop_cutoff", "init_from")
LOCATION = re.compile(r"^[\w/.]+\.(py|json):(L\d+(-\d+)?|[\w.*]+)$")
MIRRORS = {"study1": Path("/work/.mirror/sajjad-sh33+Medical-Transfer-Learning/repo"),
           "study3": Path("/work/.mirror/GuanghuiFU+medical_dino_eval/repo")}


def test_exact_dry_run_of_the_study_params_lists_every_setting_with_its_code_location():
    run = map_params(PARAMS, "exact")
    report = run.report()
    listed = {s["setting"]: s for s in report["settings"] + report["other_settings"]}
    assert set(ISSUE_LIST) <= set(listed), set(ISSUE_LIST) - set(listed)
    for key, s in listed.items():
        assert s["code"] and all(LOCATION.match(c) for c in s["code"]), (key, s["code"])
    # the study's own file: MAE-H frozen + DeiT head on DDSM -> a fine-tune with no backbone block trained
    ft = run.finetune
    assert run.mode == "finetune" and ft["unfreeze"] == 0 and ft["head"] == "deit" and ft["backbone"] == "mae_vith14"
    assert ft["dataset"] == "ddsm:study1_code" and ft["grey"] == "red"  # DDSM lists; 1-channel red stem
    assert (ft["resize"], ft["resize_size"], ft["img_size"]) == ("squash", 256, 224)
    assert ft["norm"] == "protocol"  # the DDSM class's own (0.286,) / (0.267,), declared by ddsm:study1_code
    assert (ft["augment"], ft["schedule"], ft["warmup_start_lr"], ft["warmup_epochs"]) == ("study1", "constant", 1e-8, 5.0)
    assert (ft["lr"], ft["weight_decay"], ft["batch_size"], ft["epochs"], ft["grad_clip"]) == (1e-4, 1e-5, 64, 100, 1.0)
    assert ft["keep"] == "best" and "deit_weights" not in ft  # ImageNet DeiT-B, the option's default
    assert "metric" not in ft  # the :study1_code protocol's headline is the code's metric
    assert (ft["no_decay"], ft["drop_last"], ft["backbone_eval"]) == ("biases_norms", True, True)
    concerned = {s["setting"] for s in report["settings"]}
    assert {"online_frozen", "ddsm", "grey_stem", "deit_init"} <= concerned and "deit_frozen" not in concerned
    assert report["fidelity"] == "exact" and report["ignored"].get("dataset_params.val_transforms") is None


@pytest.mark.skipif(not all(p.is_dir() for p in MIRRORS.values()), reason="the studies' code mirrors are not here")
def test_every_code_location_of_both_tables_exists_in_the_study_code():
    for name, code in STUDIES.items():
        files = {}
        for s in code.settings:
            for loc in s.code:
                f, _, lines = loc.partition(":")
                if f not in files:
                    files[f] = subprocess.run(["git", "-C", str(MIRRORS[name]), "show", f"{code.commit}:{f}"],
                                              capture_output=True, text=True, check=True).stdout
                if lines.startswith("L"):
                    last = int(lines[1:].split("-")[-1])
                    assert last <= len(files[f].splitlines()), (name, s.key, loc)
                else:  # a params.json key path: its first key is in the file
                    assert json.loads(files[f]).get(lines.split(".")[0]) is not None, (name, s.key, loc)


def test_fast_dry_run_lists_what_differs_and_says_what_fast_does():
    run = map_params(PARAMS, "fast")
    assert run.mode == "probe" and run.report()["fidelity"] == "fast"
    differs = {s["setting"] for s in run.report()["settings"]}
    assert {"online_frozen", "squash", "norm", "grey_stem", "augment", "schedule", "warmup"} <= differs
    assert "deit_init" not in differs  # the same ImageNet DeiT-B in both once deit_weights defaults to it
    assert all(s["fast"] != s["exact"] for s in run.report()["settings"])
    note = WHY_IGNORED["dataset_params.val_transforms"]
    assert "shorter side to the input size" in note and "Resize 256 -> CenterCrop 224 for the studies'" not in note


def test_deit_head_rows_the_code_refreezes_stay_frozen_in_exact(tmp_path):
    params = json.loads(PARAMS.read_text())
    params["foundation_params"].update(backbone_type="dinov2_vits14", img_size=56)
    params["foundation_params"]["partial"]["unfreeze_cutoff"] = 9  # the study's "unfrozen" row
    path = tmp_path / "params.json"
    path.write_text(json.dumps(params))
    assert map_params(path, "fast").finetune["unfreeze"] == 3  # today's fast: blocks 9..11 train
    exact = map_params(path, "exact")
    assert exact.finetune["unfreeze"] == 0 and "deit_frozen" in {s["setting"] for s in exact.report()["settings"]}
    linear = copy.deepcopy(params)
    linear["model_params"]["backbone_type"] = "none"
    path.write_text(json.dumps(linear))
    assert map_params(path, "exact").finetune["unfreeze"] == 3  # a linear head: the blocks really train
    params["foundation_params"]["freeze_backbone"] = False  # nothing re-freezes the backbone then
    path.write_text(json.dumps(params))
    assert map_params(path, "exact").finetune["unfreeze"] == "all"
    with pytest.raises(MedfmError, match="is not a fidelity"):
        map_params(path, "slow")


def test_study_clip_is_open_clip_laion2b_in_both_fidelities():
    assert STUDY_BACKBONES["clip_ViT-B-16"] == "openclip_vitb16" and _backbone("clip_vitb16") == "openclip_vitb16"
    assert _backbone("dinov2_vits14") == "dinov2_vits14"
    mansoori = PRESETS.get("mansoori2025")
    assert "openclip_vitb16" in mansoori.backbones and "clip_vitb16" not in mansoori.backbones
    grid = resolve_grid(SweepConfig(preset="mansoori2025", fidelity="exact", backbones=["clip_vitb16"]))
    assert grid["backbones"] == ["openclip_vitb16"]


@pytest.mark.parametrize("preset", ["mansoori2025", "huix2024", "huang2024"])
def test_exact_plan_of_each_preset_runs_frozen_and_deit_rows_with_unfreeze_0(preset):
    p = PRESETS.get(preset)
    assert p.fidelity == "fast" and p.code in STUDIES  # each preset says what it runs and which code exact follows
    fast_jobs, _ = plan_jobs(resolve_grid(SweepConfig(preset=preset)))
    assert {j.kind for j in fast_jobs if j.scenario == "frozen"} == {"probe"}
    grid = resolve_grid(SweepConfig(preset=preset, fidelity="exact"))
    jobs, _ = plan_jobs(grid)
    assert jobs and {j.kind for j in jobs} == {"finetune"} and {j.fidelity for j in jobs} == {"exact"}
    study1 = p.code == "study1"
    for j in jobs:
        s = exact_settings(grid, j)
        frozen = j.scenario == "frozen" or (study1 and j.head == "deit")
        assert j.unfreeze == s["unfreeze"] == (0 if frozen else "all"), j.label
        if study1:
            assert j.dataset.endswith(":study1_code") and s["resize"] == "squash"
            assert s["norm"] == "protocol"  # every dataset of the study's code declares the code's own mean/std
            assert s.get("grey") == ("red" if j.dataset.split(":")[0] in ("chexpert", "ddsm") else None)
            assert s.get("tokens_from") == ("attn_pool" if j.backbone.startswith("coca") and j.head == "deit" else None)
            assert s.get("warmup_epochs") == (5.0 if j.dataset.split(":")[0] in ("aptos2019", "ddsm") else None)
            assert s["backbone_eval"] is frozen and s["no_decay"] == "biases_norms" and s["drop_last"] is True
        else:
            assert (s["resize"], s["resize_size"], s["schedule"], s["weight_decay"]) == ("crop", 256, "constant", 0.0)
            assert s.get("weights") == ("random" if j.backbone in ("vgg16", "resnet50", "densenet121") else None)

    if study1:
        assert "ddsm:study1_code" in grid["datasets"] and "cbis_ddsm" not in grid["datasets"]
    else:  # the code's chest X-ray folders; fundus and dermoscopy keep the registry's (no paths in the code)
        assert grid["datasets"] == ["chest_xray_pneumonia:study3_code", "ichallenge_amd", "ham10000_224"]


def test_exact_needs_a_preset_with_study_code():
    with pytest.raises(MedfmError, match="follows a study's code"):
        resolve_grid(SweepConfig(backbones=["mobilenetv2"], datasets=["breastmnist"], fidelity="exact"))
    with pytest.raises(MedfmError, match="preset label_efficiency has none"):
        resolve_grid(SweepConfig(preset="label_efficiency", fidelity="exact"))


def test_sweep_plan_exact_lists_each_rows_settings(tmp_path):
    cfg = SweepConfig(preset="mansoori2025", fidelity="exact", plan_only=True, datasets=["chexpert"],
                      backbones=["coca_vitb32"], data_root=str(tmp_path / "no-data"), results=str(tmp_path / "r.sqlite"))
    summary = run_sweep(cfg)
    assert summary["fidelity"] == "exact" and summary["study_code"] == STUDY1.source
    rows = {(r["scenario"], r["head"]): r for r in summary["plan"]}
    assert set(rows) == {("frozen", "linear"), ("frozen", "deit"), ("unfrozen", "linear"), ("unfrozen", "deit")}
    assert [rows[k]["unfreeze"] for k in sorted(rows)] == [0, 0, 0, "all"]  # (frozen,deit) (frozen,lin) (unfr,deit) ...
    assert rows[("unfrozen", "deit")]["settings"]["tokens_from"] == "attn_pool"
    assert all(r["settings"]["grey"] == "red" and r["dataset"] == "chexpert:study1_code" for r in rows.values())


def test_a_stored_row_gets_its_fidelity_and_departures(tmp_path):
    store = ResultsStore(tmp_path / "r.sqlite")
    record = {"dataset": "busi", "backbone": "mobilenetv2", "head": "linear", "headline_metric": {"name": "roc_auc",
              "value": 0.9}, "run_key": "k1"}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(json.dumps(record))
    assert store.append(record, "k1", "finetune")
    entry = {"mode": "exact", "study_code": STUDY3.source, "departures": STUDY3.departures(None, "exact")}
    assert store.annotate("k1", {"fidelity": entry}, tmp_path / "run" / "results.json")
    stored = store.records()[0]
    assert stored["fidelity"]["study_code"] == "GuanghuiFU/medical_dino_eval@f2b17be"
    assert {d["setting"] for d in stored["fidelity"]["departures"]} >= {"dino_lc", "cnn_weights", "bootstrap"}
    assert json.loads((tmp_path / "run" / "results.json").read_text())["fidelity"] == entry
    assert stored["headline_metric"] == record["headline_metric"] and not store.annotate("missing", {"x": 1})


def test_study3_table_names_what_exact_still_needs():
    needs = " ".join(STUDY3.needs())
    for gap in ("study3_code protocols for ichallenge_amd",):
        assert gap in needs, gap


def test_what_exact_already_does_is_not_listed_as_needed():
    """Study 3's Resize(256) -> CenterCrop 224 is ``crop`` + resize_size 256 (crop_shorter); DINOv2's DeiT-head
    tokens are the last block's, before the final norm, in both fidelities (tests/test_study_features.py)."""
    from medfm.backbones import policy_name
    from medfm.fidelity import Row

    assert "resize_size" not in " ".join(STUDY3.needs()) and "prenorm" not in " ".join(STUDY1.needs())
    s3 = STUDY3.row_settings(Row("dinov2_vits14", "kermany_cxr_224", "linear", "frozen", 0))
    assert policy_name(s3["resize"], s3["resize_size"], {"crop_pct": 0.875}) == "crop_shorter"
    assert s3["resize_size"] == 256 and s3["img_size"] == 224
    s1 = STUDY1.row_settings(Row("dinov2_vits14", "chexpert", "deit", "unfrozen", 0))
    assert "tokens_from" not in s1 and s1["unfreeze"] == 0  # the default, patch: DINOv2's last_block tokens


def test_cli_dry_run_prints_the_code_locations_and_refuses_an_unknown_fidelity():
    from typer.testing import CliRunner

    from medfm.cli import app

    res = CliRunner().invoke(app, ["run", "--params", str(PARAMS), "--dry-run", "--fidelity", "exact"])
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "settings from the study's code (sajjad-sh33/Medical-Transfer-Learning@02db977)" in text
    assert "(options: resize=squash, resize_size=256, img_size=224)" in text and "defaults/bases.py:L66-74" in text and "departs from the paper: the paper says CBIS-DDSM" in text
    res = CliRunner().invoke(app, ["run", "--params", str(PARAMS), "--dry-run", "--fidelity", "slow"])
    # a MedfmError, which medfm's entry point prints as one `medfm: error:` line with exit status 2
    assert isinstance(res.exception, MedfmError) and str(res.exception) == "--fidelity 'slow' is not a fidelity — use fast or exact"


def test_readme_fidelity_tables_are_the_generated_ones():
    from conftest import REPO

    from medfm.fidelity import markdown_table

    text = (REPO / "README.md").read_text()
    for name in STUDIES:
        block = re.search(rf"<!-- fidelity:{name}:start -->\n(.*?)\n<!-- fidelity:{name}:end -->", text, re.S)
        assert block and block.group(1).strip() == markdown_table(name).strip(), f"README's {name} table drifted"


def test_report_lists_per_row_group_the_fidelity_and_its_departures():
    from types import SimpleNamespace

    from medfm.fidelity import Row, record_entry, report_lines

    row = Row("coca_vitb32", "chexpert", "deit", "unfrozen", 0)
    exact = SimpleNamespace(dataset="chexpert", label="coca_vitb32 u0 + deit",
                            rows=[{"fidelity": record_entry("exact", STUDY1, row)}])
    fast = SimpleNamespace(dataset="chexpert", label="coca_vitb32 + deit", rows=[{"fidelity": record_entry("fast", STUDY1, row)}])
    plain = SimpleNamespace(dataset="busi", label="mobilenetv2 + linear", rows=[{"fidelity": record_entry("fast", None, None)}])
    lines = report_lines([exact, fast, plain])
    assert lines[0] == "## Fidelity" and len(lines) == 7 and lines[-1] == ""  # the row of no study says nothing
    assert "fidelity exact, following sajjad-sh33/Medical-Transfer-Learning@02db977" in lines[2]
    assert "deit_frozen* (defaults/models.py:L571)" in lines[2]  # * : departs from the paper
    assert "coca_tokens (defaults/models.py:L339-347)" in lines[2] and "fidelity fast" in lines[3]
    assert "deit_init" not in lines[3]  # fast lists only what differs from the code


def _exact_options_missing() -> list[str]:
    from medfm.finetune import FinetuneConfig

    return [o for o in ("resize", "resize_size", "norm", "schedule", "no_decay", "tokens_from")
            if o not in FinetuneConfig.model_fields]


@pytest.mark.skipif(bool(_exact_options_missing()), reason="issue 17's preprocessing options are not merged here yet")
def test_exact_params_run_end_to_end_and_record_their_fidelity(tmp_path, monkeypatch):
    """The study's own params.json, shrunk (DINOv2-S random at 28 px, 2 epochs) on a synthetic tree of the code's
    DDSM layout: exact mode trains the head online with the code's settings and stores its fidelity."""
    from dataset_trees import ddsm_tree

    from medfm.studyparams import run_study_params

    monkeypatch.setenv("MEDFM_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("MEDFM_CACHE", str(tmp_path / "cache"))
    ddsm_tree(tmp_path)
    params = json.loads(PARAMS.read_text())
    params["dataset_params"]["data_location"] = str(tmp_path)
    for t in ("val_transforms", "test_transforms"):
        params["dataset_params"][t]["Resize"].update(height=32, width=32)
        params["dataset_params"][t]["CenterCrop"].update(height=28, width=28)
    params["dataset_params"]["train_transforms"]["RandomResizedCrop"]["size"] = 28
    params["foundation_params"].update(backbone_type="dinov2_vits14", img_size=28, pretrained=False)
    params["model_params"]["backbone_type"] = "none"
    params["training_params"].update(epochs=2, save_dir=str(tmp_path / "results"))
    params["dataloader_params"]["trainloader"].update(batch_size=2, num_workers=0)
    params["system_params"]["use_GPU"] = False
    path = tmp_path / "params.json"
    path.write_text(json.dumps(params))
    record = run_study_params(path, fidelity="exact")
    assert record["kind"] == "finetune" and record["unfreeze"] == 0 and record["dataset"].startswith("ddsm")
    assert record["headline_metric"]["name"] == "roc_auc_study1"
    hp = record["hyperparameters"]
    assert (hp["schedule"], hp["warmup_start_lr"], hp["no_decay"], hp["drop_last"], hp["augment"]) == \
        ("constant", 1e-8, "biases_norms", True, "study1")
    stored = ResultsStore(record["results_store"]).records()[-1]
    assert stored["fidelity"]["mode"] == "exact" and stored["fidelity"]["study_code"] == STUDY1.source
    assert "squash" in {d["setting"] for d in stored["fidelity"]["departures"]}


def test_exact_warm_up_is_update_warmups_per_dataset():
    """classification.py:L104-113 @02db977 (called before every run, L194): 5 epochs for APTOS/DDSM, 1,000
    iterations for ISIC/CheXpert, and 0/0 for any other dataset, which LinearWarmup turns into 1 iteration
    (utils/_utils.py:L124-126) - not params.json's 1,000."""
    from medfm.finetune.engine import lr_at
    from medfm.fidelity import Row

    def warm(dataset):
        s = STUDY1.row_settings(Row("mobilenetv2", dataset, "linear", "frozen", 0))
        return s.get("warmup_epochs"), s.get("warmup_steps")

    assert warm("aptos2019") == warm("ddsm") == warm("cbis_ddsm") == (5.0, None)
    assert warm("isic2019") == warm("chexpert") == (None, 1000)
    for dataset in ("breastmnist", "busi", "ham10000_224", "kermany_cxr_224"):
        assert warm(dataset) == (None, 1), dataset
    # the code's one-iteration warm-up: the peak at step 0, then one increment above it for the rest of the run
    assert lr_at("constant", 0, 1e-4, 1e-8, 1, 800) == pytest.approx(1e-4)
    assert lr_at("constant", 799, 1e-4, 1e-8, 1, 800) == pytest.approx(2e-4 - 1e-8)
