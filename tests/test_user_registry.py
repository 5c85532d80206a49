"""A user's own backbones (a YAML/TOML file, or a package's `medfm.backbones` entry point) run like built-in ones."""

import textwrap

import pytest
from subsets import few_rows

from medfm.backbones import resolve_backbone
from medfm.backbones.table import user_backbone_rows
from medfm.backbones.user_registry import _entry_point_entries, user_backbones
from medfm.errors import MedfmError


@pytest.fixture
def no_default_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))  # never read a real user's file
    monkeypatch.delenv("MEDFM_BACKBONES", raising=False)


def lab_registry(path, weights):
    path.write_text(textwrap.dedent(f"""\
        backbones:
          - name: lab_dino
            loader: timm
            model_id: vit_small_patch14_dinov2.lvd142m
            weights: {weights}
            img_size: 28
            licence: Apache-2.0
            notes: our lab's DINOv2-S checkpoint
        """))
    return path


def test_a_user_backbone_runs_through_extract_probe_finetune_and_sweep(pneu_subset, dinov2_s_weights, tmp_path,
                                                                      monkeypatch, no_default_registry):
    from medfm.config import ExtractConfig, FinetuneConfig, ProbeConfig, SweepConfig
    from medfm.extract import run_extract
    from medfm.finetune import run_finetune
    from medfm.probe import run_probe
    from medfm.results import ResultsStore
    from medfm.sweep import run_sweep

    reg = lab_registry(tmp_path / "backbones.yaml", dinov2_s_weights)
    data = str(few_rows(pneu_subset, tmp_path, per_class=8))  # 16 images per split
    monkeypatch.setenv("MEDFM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MEDFM_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("MEDFM_BACKBONES", str(reg))  # found by the environment variable ...
    ex = run_extract(ExtractConfig(backbone="lab_dino", dataset=data, num_workers=0))
    probe = run_probe(ProbeConfig(cache=str(ex.cache), head="knn", ks=[5], bootstrap=0))
    assert probe["backbone"] == "lab_dino" and 0.5 < probe["headline_metric"]["value"] <= 1.0
    monkeypatch.delenv("MEDFM_BACKBONES")  # ... and by the option
    ft = run_finetune(FinetuneConfig(backbone="lab_dino", dataset=data, backbones_file=str(reg), unfreeze=1,
                                     epochs=1, batch_size=32, num_workers=0, warmup_steps=0, save_model=False))
    assert ft["backbone"] == "lab_dino" and ft["unfreeze"] == 1 and ft["blocks"] == 12
    store = tmp_path / "sweep.sqlite"
    summary = run_sweep(SweepConfig(backbones=["lab_dino"], datasets=[data], heads=["knn"],
                                    backbones_file=str(reg), probe={"bootstrap": 0, "ks": [5]}, results=str(store),
                                    scenarios=["frozen", "unfrozen"], unfreeze=[1], out=str(tmp_path / "sweep"),
                                    finetune={"epochs": 1, "batch_size": 32, "num_workers": 0, "warmup_steps": 0}))
    assert summary["probes"]["ran"] == 1 and summary["finetunes"]["ran"] == 0  # knn has no unfrozen rows
    assert summary["caches"] == {f"{data}/lab_dino": str(ex.cache)}  # the same cache, found finished
    assert [r["backbone"] for r in ResultsStore(store).records()] == ["lab_dino"]


def test_user_entries_list_with_their_origin_and_never_shadow_builtins(tmp_path, dinov2_s_weights, monkeypatch,
                                                                        no_default_registry):
    reg = lab_registry(tmp_path / "backbones.yaml", dinov2_s_weights)
    header, rows = user_backbone_rows(str(reg))
    assert rows == [("lab_dino", "user", "timm", "vit_small_patch14_dinov2.lvd142m", "cls", str(dinov2_s_weights.resolve()),  # the listing shows the resolved file
                     "Apache-2.0", str(reg))]
    toml = tmp_path / "backbones.toml"
    toml.write_text('[[backbones]]\nname = "dinov2_vits14"\nloader = "timm"\nmodel_id = "x"\narch = "vit"\n')
    with pytest.raises(MedfmError, match=f"'dinov2_vits14' in {toml} clashes with the built-in backbone"):
        user_backbones(str(toml))
    with pytest.raises(MedfmError, match="clashes with the built-in backbone"):  # even when the built-in is asked for
        resolve_backbone("dinov2_vits14", weights="random", backbones_file=str(toml))
    toml.write_text('[backbones.mine]\nloader = "timm"\nmodel_id = "x"\narch = "vit"\nlicense = "MIT"\n')
    with pytest.raises(MedfmError, match="unknown keys license — use the keys of a built-in entry"):
        user_backbones(str(toml))
    toml.write_text('[backbones."timm:mine"]\nloader = "timm"\nmodel_id = "x"\narch = "vit"\n')
    with pytest.raises(MedfmError, match="contains ':'"):
        user_backbones(str(toml))
    # a package ships entries through the `medfm.backbones` entry-point group
    dist = tmp_path / "site" / "lab_models-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lab-models\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[medfm.backbones]\nlab = lab_models:ENTRIES\n")
    (tmp_path / "site" / "lab_models.py").write_text(
        "ENTRIES = [dict(name='lab_cnn', loader='timm', model_id='resnet18.a1_in1k', licence='MIT')]\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    _entry_point_entries.cache_clear()
    try:
        users = user_backbones(str(reg))
        assert users["lab_cnn"].origin == "entry point lab_models:ENTRIES (lab-models)"
        assert users["lab_cnn"].entry.arch == "cnn" and users["lab_cnn"].entry.blocks  # the rest read from timm
        assert set(users) == {"lab_dino", "lab_cnn"}
    finally:
        _entry_point_entries.cache_clear()

