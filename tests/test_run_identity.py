"""Run identity (issue 13.3): the report averages seeds of one experiment, never different experiments.

Every row is a real run on real images: MobileNetV2 over the 128-image PneumoniaMNIST subset, probed off
caches extracted with ImageNet weights at 32 px (two seeds), random weights at 32 px and ImageNet weights
at 64 px, and fine-tuned (1 epoch) with 0 and 1 blocks unfrozen, all into one results store. The second
fine-tune is killed between its two writes and rerun (issue 13.4).
"""

import json
import sqlite3

import pytest

from medfm.config import ExtractConfig, ProbeConfig, ReportConfig
from medfm.errors import MedfmError
from medfm.report import run_report, select_rows
from medfm.report.aggregate import group_rows
from medfm.results import SCHEMA, ResultsStore

PROBE = dict(lrs=[1e-2], wds=[1e-4], epochs=5, min_steps=20, bootstrap=0)


@pytest.fixture(scope="module")
def store(pneu_subset, pneu_tiny_cache, tmp_path_factory):
    from medfm.extract import run_extract
    from medfm.finetune import FinetuneConfig, run_finetune
    from medfm.probe import run_probe

    root = tmp_path_factory.mktemp("identity")
    path = str(root / "results.sqlite")
    caches = {("pretrained", 32): pneu_tiny_cache}
    for weights, size in (("random", 32), ("pretrained", 64)):
        caches[(weights, size)] = run_extract(ExtractConfig(
            backbone="mobilenetv2", dataset=str(pneu_subset), img_size=size, num_workers=0,
            weights=None if weights == "pretrained" else weights, cache=str(root / f"{weights}-{size}.zarr"))).cache
    for (weights, size), cache in caches.items():
        for seed in (0, 1) if (weights, size) == ("pretrained", 32) else (0,):
            run_probe(ProbeConfig(cache=str(cache), seed=seed, results=path, out=str(root / f"p-{weights}-{size}-{seed}"),
                                  **PROBE))
    import medfm.results as results

    for unfreeze in (0, 1):
        ft = FinetuneConfig(backbone="mobilenetv2", dataset=str(pneu_subset), img_size=32, unfreeze=unfreeze, epochs=1,
                            batch_size=32, warmup_steps=0, num_workers=0, save_model=False, results=path)
        if unfreeze == 0:
            run_finetune(ft.model_copy(update={"out": str(root / "ft-u0")}))
            continue
        # the u1 fine-tune is killed between its two writes (default run folder), then rerun: issue 13.4
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MEDFM_RUNS", str(root / "runs"))
            with pytest.MonkeyPatch.context() as fault:
                def killed(*args, **kwargs):
                    raise RuntimeError("killed")

                fault.setattr(results.ResultsStore, "append", killed)
                with pytest.raises(RuntimeError, match="killed"):
                    run_finetune(ft)
            folders = list((root / "runs" / "finetune").iterdir())
            rows_before = len(ResultsStore(path).records(kind="finetune"))
            completed = run_finetune(ft)
            folders_after = list((root / "runs" / "finetune").iterdir())
    return {"path": path, "killed_ft": (folders, rows_before, completed, folders_after)}


def test_a_finetune_killed_between_its_two_writes_is_completed_by_its_rerun(store):
    folders, rows_before, completed, folders_after = store["killed_ft"]
    assert len(folders) == 1 and folders_after == folders  # found again, not trained into a new folder
    assert rows_before == 1 and completed["completed"] is True and completed["stored"] is True
    assert json.loads((folders[0] / "results.json").read_text())["test"] == completed["test"]
    (row,) = ResultsStore(store["path"]).records(run_key=completed["run_key"])
    assert row["test"] == completed["test"] and row["unfreeze"] == 1


def test_weights_image_size_and_unfreeze_depth_are_separate_report_rows(store):
    records = ResultsStore(store["path"], readonly=True).records()
    assert len(records) == 6 and all(r["identity"] and r["identity_sha256"] for r in records)
    groups = {g.label: g for g in group_rows(records, n_boot=0)}
    assert sorted(groups) == ["mobilenetv2 (random init) @32 + linear", "mobilenetv2 @32 + linear",
                              "mobilenetv2 @64 + linear", "mobilenetv2 u0 + linear", "mobilenetv2 u1 + linear"]
    assert groups["mobilenetv2 @32 + linear"].seeds == [0, 1]  # seeds of one experiment: averaged
    assert all(len(g.rows) == 1 for label, g in groups.items() if label != "mobilenetv2 @32 + linear")
    assert groups["mobilenetv2 (random init) @32 + linear"].mean != groups["mobilenetv2 @32 + linear"].mean
    ft = {g.identity["unfreeze"]: g for g in groups.values() if g.kind == "finetune"}
    assert set(ft) == {0, 1} and ft[0].rows[0]["test"] != ft[1].rows[0]["test"]
    ident = groups["mobilenetv2 @64 + linear"].identity
    assert (ident["img_size"], ident["weights"], ident["grey"], ident["layers"], ident["feature"]) == (64, "file", "repeat", 1, "mean")
    assert len(ident["weights_sha256"]) == 64 and len(ident["dataset_sha256"]) == 64


def test_old_rows_are_grouped_by_what_they_recorded_and_never_with_new_rows(store, tmp_path):
    """A store written before identities existed (the old schema, no identity in the records) still reports;
    its rows form their own groups, labelled as old rows."""
    records = ResultsStore(store["path"], readonly=True).records()
    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as con:  # exactly what medfm wrote before: schema only, no application id
        con.executescript(SCHEMA)
        for i, r in enumerate(records):
            r = {k: v for k, v in r.items() if k not in ("identity", "identity_sha256")}
            con.execute("INSERT INTO results (run_key, created, kind, dataset, backbone, head, fraction, seed, "
                        "headline_name, headline_value, record) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                        (f"old-{i}", "t", r["kind"], r["dataset"], r["backbone"], r["head"], r["fraction"], r["seed"],
                         r["headline_metric"]["name"], r["headline_metric"]["value"], json.dumps(r)))
    stripped = ResultsStore(old, readonly=True).records()
    old_groups = group_rows(stripped, n_boot=0)
    assert len(old_groups) == 5 and sorted(len(g.rows) for g in old_groups) == [1, 1, 1, 1, 2]
    mixed = group_rows(records + stripped, n_boot=0)
    assert len(mixed) == 10 and sum("(old row)" in g.label for g in mixed) == 5
    result = run_report(ReportConfig(results=str(old), out=str(tmp_path / "report"), bootstrap=0))
    assert result["groups"] == 5 and "predate run identities" in (tmp_path / "report" / "leaderboard.md").read_text()


def test_report_filters_select_by_identity_fields(store, tmp_path):
    records = ResultsStore(store["path"], readonly=True).records()

    def pick(**kw):
        return select_rows(records, ReportConfig(**kw))

    assert [r["identity"]["weights"] for r in pick(where=["weights=random"])] == ["random"]
    assert len(pick(where=["img_size=32", "weights=file"])) == 4  # 2 probe seeds + 2 fine-tunes
    assert len(pick(where=["img_size=32", "img_size=64"], kind="probe")) == 4  # one field twice: either value
    assert [r["unfreeze"] for r in pick(where=["unfreeze=1"])] == [1]
    assert len(pick(fraction=[1.0], kind="finetune")) == 2 and pick(fraction=[0.5]) == []
    assert len(pick(dataset=[records[0]["dataset"]])) == 6
    with pytest.raises(MedfmError, match="no such field.*backbone"):
        pick(where=["backbnoe=mobilenetv2"])
    with pytest.raises(MedfmError, match="no rows matching the filters"):
        run_report(ReportConfig(results=store["path"], out=str(tmp_path / "r"), where=["backbone=dinov2_vits14"]))
