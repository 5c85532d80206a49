"""`medfm report`'s statistics on a real results store: tied-for-best marks, the pairwise matrix, the critical-
difference diagram, frozen vs fine-tuned per label budget and `--published`, rendered by headless Chromium.

The store is real and built in this process: three real backbones (MobileNetV2 and EfficientNet-Lite0 with their
packaged ImageNet weights at 32 px, DINOv2 ViT-S/14 at 56 px) x two real datasets (the PneumoniaMNIST subset
`pneu_subset`, a BreastMNIST subset with its whole 156-image test split) x two seeds, frozen linear probes and
fine-tunes of the last block (1 epoch), at the full label budget, plus a half budget on PneumoniaMNIST; and one
probe on a third, tiny dataset that only MobileNetV2 ran (so the ranking must leave it out and say why).
"""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
from PIL import Image

from conftest import rendered_body_attrs
from medfm.errors import MedfmError

pytestmark = pytest.mark.slow
BACKBONES = ("mobilenetv2", "efficientnet_lite0", "dinov2_vits14")
BREAST_SUBSET = {"train": (12, 36), "val": (8, 16), "test": (42, 114)}  # per class; the test counts are the whole split


def breast_subset(data_root, root):
    npz = np.load(data_root / "breastmnist.npz")
    rng = np.random.Generator(np.random.PCG64(0))
    rows = ["path,label,split"]
    for split, counts in BREAST_SUBSET.items():
        y = npz[f"{split}_labels"][:, 0]
        (root / split).mkdir(parents=True)
        for c, n in enumerate(counts):
            for i in np.sort(rng.choice(np.flatnonzero(y == c), n, replace=False)):
                Image.fromarray(npz[f"{split}_images"][i]).save(root / split / f"{i}.png")
                rows.append(f"{split}/{i}.png,{('malignant', 'benign')[c]},{split}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root / "labels.csv"


@pytest.fixture(scope="module")
def store(data_root, pneu_subset, dinov2_s_weights, mobilenet_weights, tmp_path_factory):
    from medfm.config import SweepConfig
    from medfm.sweep import run_sweep
    from subsets import few_rows

    root = tmp_path_factory.mktemp("report-stats")
    breast = breast_subset(data_root, root / "breast")
    few = few_rows(pneu_subset, root, per_class=4)
    path = root / "results.sqlite"
    grid = dict(backbones=list(BACKBONES), weights={"dinov2_vits14": str(dinov2_s_weights)}, heads=["linear"],
                seeds=[0, 1], img_size={"dinov2_vits14": 56, "mobilenetv2": 32, "efficientnet_lite0": 32},
                scenarios=["frozen", "unfrozen"], unfreeze=[1], probe={"bootstrap": 0}, results=str(path),
                out=str(root / "runs"), finetune={"epochs": 1, "batch_size": 32, "num_workers": 0})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDFM_CACHE", str(root / "cache"))
        mp.setenv("MEDFM_RUNS", str(root / "runs"))
        run_sweep(SweepConfig(**grid, datasets=[str(pneu_subset), str(breast)], fractions=[1.0]))
        run_sweep(SweepConfig(**grid, datasets=[str(pneu_subset)], fractions=[0.5]))
        run_sweep(SweepConfig(**grid | {"backbones": ["mobilenetv2"], "scenarios": ["frozen"], "weights": {}, "img_size": 32}, datasets=[str(few)],
                              fractions=[1.0]))
    return path


def names(store_path):
    from medfm.results import ResultsStore

    rows = ResultsStore(store_path, readonly=True).records()
    by_size = sorted({r["dataset"] for r in rows}, key=lambda d: -max(r["n"]["test"] for r in rows if r["dataset"] == d))
    return rows, {"breast": by_size[0], "pneu": by_size[1], "few": by_size[2]}


@pytest.fixture(scope="module")
def published_csv(store, tmp_path_factory):
    """One like-for-like match, one match whose published protocol differs, one accuracy match, one row only here."""
    _, ds = names(store)
    f = tmp_path_factory.mktemp("published") / "published.csv"
    f.write_text("dataset,backbone,protocol,image_size,metric,value,source,note,settings\n"
                 f"{ds['breast']},mobilenetv2,linear probe,,roc_auc,61.00%,paper A,like for like,optimizer=lbfgs\n"
                 f"{ds['breast']},dinov2_vits14,linear probe,,AUC,0.80,paper B,their head,optimizer=adamw;epochs=100\n"
                 f"{ds['breast']},dinov2_vits14,linear probe,,ACC,75%,paper B,,optimizer=adamw;epochs=100\n"
                 f"{ds['pneu']},dino_vitb16,linear probe,,roc_auc,0.9,paper C,not run by medfm,\n")
    return f


@pytest.fixture(scope="module")
def report(store, published_csv, tmp_path_factory):
    from medfm.config import ReportConfig
    from medfm.report import run_report

    out = tmp_path_factory.mktemp("report")
    result = run_report(ReportConfig(results=str(store), out=str(out), bootstrap=400, published=str(published_csv)))
    return result, out


def table(out, name) -> list[dict]:
    with open(out / f"{name}.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_store_holds_three_backbones_two_datasets_two_seeds_frozen_and_finetuned_with_predictions(store):
    rows, ds = names(store)
    main = [r for r in rows if r["dataset"] in (ds["breast"], ds["pneu"]) and r["fraction"] == 1.0]
    assert {(r["backbone"], r["dataset"], r["kind"], r["seed"]) for r in main} == {
        (b, d, k, s) for b in BACKBONES for d in (ds["breast"], ds["pneu"]) for k in ("probe", "finetune") for s in (0, 1)}
    tuned = [r for r in rows if r["kind"] == "finetune"]
    assert all(len(r["predictions"]["test"]["y_score"]) == r["n"]["test"] for r in tuned)  # fine-tunes keep them too


def test_tied_for_best_marks_follow_the_holm_corrected_pairs_and_match_independent_tests(store, report):
    from medfm.stats import delong_test, paired_bootstrap

    result, out = report
    board = table(out, "results")
    pairs = table(out, "pairwise")
    rows, ds = names(store)
    for dataset in (ds["breast"], ds["pneu"]):
        entries = [g for g in board if g["dataset"] == dataset and g["fraction"] == "1.0"]
        assert len(entries) == 6 and sum(g["vs_best"] == "best" for g in entries) == 1
        best = next(g for g in entries if g["vs_best"] == "best")
        assert float(best["mean"]) == max(float(g["mean"]) for g in entries)
        mine = [p for p in pairs if p["dataset"] == dataset]
        assert len(mine) == 15  # every pair of 6 entries, on the same test rows
        for g in entries:
            if g is best:
                continue
            vs = next(p for p in mine if {p["A"], p["B"]} == {best["run"] + _kind(best), g["run"] + _kind(g)})
            assert g["vs_best"] == ("below best" if vs["significant"] == "yes" else "tied for best")
            assert float(vs["A − B"]) == pytest.approx(abs(float(best["mean"]) - float(g["mean"])), abs=1e-4)
    assert "tied for best" in {g["vs_best"] for g in board} and "below best" in {g["vs_best"] for g in board}

    # a probe-vs-probe pair (probes at the full budget predict the same in both seeds): the same numbers as
    # medfm.stats' single-vector DeLong test and paired bootstrap, drawn from the same resamples
    probes = {r["backbone"]: r for r in rows if r["dataset"] == ds["breast"] and r["kind"] == "probe" and r["seed"] == 0}
    seed1 = {r["backbone"]: r for r in rows if r["dataset"] == ds["breast"] and r["kind"] == "probe" and r["seed"] == 1}
    assert all(probes[b]["predictions"] == seed1[b]["predictions"] for b in BACKBONES)
    y = np.asarray(probes["dinov2_vits14"]["predictions"]["test"]["y_true"])
    a, b = (np.asarray(probes[k]["predictions"]["test"]["y_score"])[:, 1] for k in ("dinov2_vits14", "mobilenetv2"))
    row = next(p for p in pairs if p["dataset"] == ds["breast"] and "[finetune]" not in p["A"] + p["B"]
               and {p["A"].split()[0], p["B"].split()[0]} == {"dinov2_vits14", "mobilenetv2"})
    sign = 1 if row["A"].startswith("dinov2") else -1
    _, p_delong = delong_test(y, a, b)
    assert float(row["p DeLong"]) == pytest.approx(p_delong, rel=2e-3, abs=5e-4)  # printed to 3 digits
    boot = paired_bootstrap(y, a, b, resamples=400, seed=0)
    low, high = (float(x) for x in re.findall(r"[-+][\d.]+", row["95% CI"]))
    assert sorted((sign * low, sign * high)) == pytest.approx([boot.low, boot.high], abs=2e-4)
    assert float(row["p boot"]) == pytest.approx(boot.p_value, abs=5e-4)  # printed to 3 decimals


def _kind(g: dict) -> str:
    return "" if g["kind"] == "probe" else f" [{g['kind']}]"


def test_ranks_across_datasets_leave_out_the_dataset_without_every_entry_and_say_why(store, report):
    result, out = report
    ranks = table(out, "ranks")
    rows, ds = names(store)
    assert len(ranks) == 6 and {k for k in ranks[0]} >= {ds["breast"], ds["pneu"]} and ds["few"] not in ranks[0]
    per_ds = {d: sorted((-float(r[d]), r["entry"]) for r in ranks) for d in (ds["breast"], ds["pneu"])}
    from scipy.stats import rankdata

    expected = {r["entry"]: np.mean([rankdata([-float(x[d]) for x in ranks])[i] for d in per_ds])
                for i, r in enumerate(ranks)}
    assert {r["entry"]: float(r["average rank"]) for r in ranks} == pytest.approx(expected, abs=0.005)
    md = (out / "leaderboard.md").read_text()
    assert re.search(rf"dataset {re.escape(ds['few'])} left out: no result for .*efficientnet_lite0", md)
    assert "Friedman χ² = " in md and "Nemenyi q(0.05) = 2.850" in md  # Demšar's q for k = 6
    assert any("critical-difference" in f for f in result["figures"])


def test_frozen_vs_finetuned_table_pairs_each_backbone_at_each_label_budget(store, report):
    result, out = report
    rows = table(out, "frozen_vs_finetuned")
    _, ds = names(store)
    cells = {(r["dataset"], r["backbone"].split()[0], r["label budget"]) for r in rows}
    assert cells == {(d, b, "1") for d in (ds["breast"], ds["pneu"]) for b in BACKBONES} | {
        (ds["pneu"], b, "0.5") for b in BACKBONES}
    for r in rows:
        assert float(r["fine-tuned − frozen"]) == pytest.approx(float(r["fine-tuned value"]) - float(r["frozen value"]),
                                                               abs=2e-4)
        low, high = (float(x) for x in re.findall(r"[-+][\d.]+", r["95% CI"]))
        assert low <= high and "last 1 of" in r["fine-tuned"]
    assert sum("frozen_vs_fine-tuned" in f for f in result["figures"]) == 2


def test_published_column_matches_entries_names_protocol_differences_and_lists_rows_only_in_the_file(store, report):
    result, out = report
    _, ds = names(store)
    board = {(g["dataset"], g["run"].split()[0], g["kind"]): g for g in table(out, "results")}
    published = table(out, "published")
    like = next(p for p in published if p["backbone"] == "mobilenetv2")
    entry = board[(ds["breast"], "mobilenetv2", "probe")]
    assert float(like["published"]) == pytest.approx(0.61) and like["protocol differences"] == "none recorded"
    assert float(like["medfm − published"]) == pytest.approx(float(entry["mean"]) - 0.61, abs=1e-4)
    differs = [p for p in published if p["backbone"] == "dinov2_vits14"]
    assert sorted(p["metric"] for p in differs) == ["accuracy", "roc_auc"]  # a published ACC matches medfm's accuracy
    assert all(p["protocol differences"] == "published optimizer=adamw; medfm ran optimizer=lbfgs; "
                                            "published epochs=100; medfm's run does not use epochs" for p in differs)
    assert len(published) == 3
    only = table(out, "published_only")
    assert [(p["backbone"], p["dataset"]) for p in only] == [("dino_vitb16", ds["pneu"])]
    md = (out / "leaderboard.md").read_text()
    dino = next(line for line in md.splitlines() if line.startswith(f"| {ds['breast']} ") and "dinov2_vits14" in line
                and "| probe |" in line)
    assert "0.8000 (protocol differs)" in dino
    assert re.search(r"\| 0\.6100 \| [-+]0\.\d{4} \|", md)


def test_published_accepts_a_shipped_table_by_name_and_a_missing_file_stops_the_report_before_it_writes(store,
                                                                                                         tmp_path):
    from medfm.config import ReportConfig
    from medfm.published import SHIPPED, resolve_published
    from medfm.report import run_report

    assert resolve_published("medmnist_plus") == SHIPPED / "medmnist_plus.csv"
    with pytest.raises(MedfmError, match="not found .* shipped table: mansoori2025, medmnist_plus"):
        run_report(ReportConfig(results=str(store), out=str(tmp_path / "report"), published=str(tmp_path / "nope.csv")))
    assert not (tmp_path / "report").exists()


def test_report_sections_render_in_headless_chromium(report, chromium, tmp_path):
    result, out = report
    probe = ("window.addEventListener('load', () => { const imgs = [...document.images]; const b = document.body;"
             " const ok = i => i.complete && i.naturalWidth > 100;"
             " b.setAttribute('data-imgs', imgs.length); b.setAttribute('data-rendered', imgs.filter(ok).length);"
             " for (const [k, t] of [['matrix', 'pairwise matrix'], ['cd', 'critical-difference'],"
             " ['fvt', 'frozen vs fine-tuned']]) b.setAttribute('data-' + k, imgs.filter(i => ok(i) && i.alt.includes(t)).length);"
             " for (const id of ['leaderboard', 'pairwise', 'ranks', 'frozen_vs_finetuned', 'published', 'published_only'])"
             " b.setAttribute('data-rows-' + id, document.querySelectorAll('#' + id + ' tbody tr').length);"
             " b.setAttribute('data-tied', document.querySelectorAll('#leaderboard td.tied-for-best').length);"
             " });")
    attrs = rendered_body_attrs(chromium, out / "report.html", probe, tmp_path)
    assert attrs["imgs"] == len(result["figures"]) and attrs["rendered"] == attrs["imgs"], attrs
    assert attrs["matrix"] == 2 and attrs["cd"] == 1 and attrs["fvt"] == 2, attrs  # the tiny dataset has one entry
    assert attrs["rows-leaderboard"] == 13 and attrs["rows-pairwise"] == 30 and attrs["rows-ranks"] == 6, attrs
    assert attrs["rows-frozen_vs_finetuned"] == 9 and attrs["rows-published"] == 3 and attrs["rows-published_only"] == 1
    assert attrs["tied"] >= 1, attrs


def test_only_rows_on_the_same_test_rows_are_paired_and_bootstrap_0_leaves_delong(store):
    """Rows of other dataset content, or without predictions, are left out with the reason; with --bootstrap 0
    binary ROC-AUC pairs are still tested (DeLong), so the marks stay."""
    import copy

    from medfm.identity import identity_sha256
    from medfm.report.aggregate import group_rows, leaderboard
    from medfm.report.paired import compare_datasets

    rows, ds = names(store)
    rows = [copy.deepcopy(r) for r in rows if r["dataset"] == ds["breast"] and r["fraction"] == 1.0]
    for r in rows:
        if r["backbone"] == "efficientnet_lite0" and r["kind"] == "probe":  # as if its dataset had other content
            r["identity"]["dataset_sha256"] = "0" * 64
            r["identity_sha256"] = identity_sha256(r["identity"])
        if r["backbone"] == "mobilenetv2" and r["kind"] == "finetune":  # stored without predictions
            del r["predictions"]
    (c,) = compare_datasets(leaderboard(group_rows(rows, 0)), 0)
    left = {g.backbone + " " + g.kind: why for g, why in c.left_out}
    assert left == {"efficientnet_lite0 probe": "scored on other test rows than the best entry (different dataset "
                                                "content or split)",
                    "mobilenetv2 finetune": "no stored test predictions (run with --store-predictions)"}
    assert len(c.entries) == 4 and len(c.pairs) == 6
    assert all(np.isnan(p.p_boot) and 0 <= p.p_delong <= 1 and p.tested for p in c.pairs.values())
    assert {c.status(g) for g in c.entries} <= {"best", "tied for best", "below best"}
