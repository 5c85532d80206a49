"""The design card's commands work as typed: short dataset names, bare `medfm probe`, real class counts."""

import pytest
from subsets import few_rows

from medfm.data import DATASETS, create_dataset
from medfm.data.zoo import known_class_count
from medfm.errors import MedfmError


def test_short_dataset_names_mean_the_study_datasets(tmp_path):
    assert DATASETS.get("isic") is DATASETS.get("isic2019") and DATASETS.get("aptos") is DATASETS.get("aptos2019")
    assert DATASETS.get("cbis") is DATASETS.get("cbis_ddsm") and DATASETS.get("ddsm").location == "DDSM"
    assert DATASETS.aliases_of("isic2019") == ["isic"] and "isic" not in DATASETS.names()
    with pytest.raises(MedfmError, match="isic2019/ISIC_2019_Training_GroundTruth.csv not found"):
        create_dataset("isic:grouped", tmp_path)  # data missing: the usual one-liner, never 'unknown dataset'
    # every dataset whose classes the registry knows shows a real count (CBIS-DDSM, DDSM, CheXpert included)
    assert {n: known_class_count(e) for n, e in DATASETS.items() if n in ("cbis_ddsm", "ddsm", "chexpert", "busi")} == \
        {"busi": 3, "cbis_ddsm": 2, "chexpert": 14, "ddsm": 2}
    assert all(known_class_count(e) for _, e in DATASETS.items())


def test_bare_probe_probes_every_cache_not_yet_stored(pneu_subset, mobilenet_weights, tmp_path, monkeypatch):
    from medfm.config import ExtractConfig, ProbeConfig
    from medfm.extract import run_extract
    from medfm.probe.every_cache import probe_every_cache

    monkeypatch.setenv("MEDFM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MEDFM_RUNS", str(tmp_path / "runs"))
    data = few_rows(pneu_subset, tmp_path, per_class=8)
    caches = [run_extract(ExtractConfig(backbone="mobilenetv2", dataset=str(data), weights=w, img_size=32,
                                        num_workers=0)).cache for w in (None, "random")]
    probe = {"head": "knn", "ks": [5], "bootstrap": 0}
    first = probe_every_cache(ProbeConfig(**probe))
    assert sorted(p["cache"] for p in first["probed"]) == sorted(map(str, caches)) and first["already_stored"] == []
    again = probe_every_cache(ProbeConfig(**probe))  # same options: the same run keys, already in the store
    assert again["probed"] == [] and sorted(again["already_stored"]) == sorted(map(str, caches))
    other = probe_every_cache(ProbeConfig(**probe, seed=1, backbone="mobilenetv2", dataset=data.parent.name))
    assert len(other["probed"]) == 2  # another seed is another probe
    with pytest.raises(MedfmError, match="no finished feature cache of backbone dinov2_vits14 under"):
        probe_every_cache(ProbeConfig(**probe, backbone="dinov2_vits14"))


def test_extract_as_typed_on_the_design_card_fails_only_for_missing_data(cli, tmp_path):
    line = cli.error("extract", "--backbone", "sam2_l", "--dataset", "isic", "--data-root", tmp_path)
    assert "unknown dataset" not in line and "unknown backbone" not in line
    assert line.startswith(f"medfm: error: {tmp_path}/isic2019/ISIC_2019_Training_GroundTruth.csv not found"), line
