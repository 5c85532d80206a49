"""Published numbers: the shipped MedMNIST+ table reads exactly, bad files stop with file:line, matches say
where protocols differ."""

import pytest

from medfm.errors import MedfmError
from medfm.published import SHIPPED, compare, read_published

HEADER = "dataset,backbone,protocol,image_size,metric,value,source,note,settings\n"


def test_shipped_medmnist_plus_table_holds_the_published_values_on_the_0_1_scale():
    rows = read_published(SHIPPED / "medmnist_plus.csv")
    by_key = {r.key(): r for r in rows}
    # ../shared/PUBLISHED.md: PneumoniaMNIST 28 px, frozen linear probe, test AUC: DINO .9729, CLIP .9448, ResNet-18 .8769
    assert by_key[("pneumoniamnist", "dino_vitb16", "linear probe", 28, "roc_auc")].value == pytest.approx(0.9729)
    assert by_key[("pneumoniamnist", "timm:vit_base_patch16_clip_224.openai", "linear probe", 28, "roc_auc")].value == pytest.approx(0.9448)
    assert by_key[("pneumoniamnist", "timm:resnet18", "linear probe", 28, "roc_auc")].value == pytest.approx(0.8769)
    assert by_key[("breastmnist", "dino_vitb16", "knn", 224, "accuracy")].value == pytest.approx(0.8718)
    assert by_key[("dermamnist", "timm:resnet18", "linear probe", 224, "roc_auc")].value == pytest.approx(0.8838)
    assert len(rows) == 68 + 56 + 40  # pneumonia (4 LP + 3 kNN + 3 end-to-end), breast (3 + 3 + 3), derma (3 + 3)
    assert all(0 < r.value < 1 for r in rows) and {r.settings.get("resize") for r in rows} == {"pad"}


@pytest.mark.parametrize("line, message", [
    ("busi,x,linear probe,,roc_auc,97.3,s,n,", "above 1 without a % sign"),
    ("busi,x,linear probe,,roc_auc,high,s,n,", "is not a number"),
    ("busi,x,probe,,roc_auc,0.9,s,n,", "unknown protocol"),
    ("busi,x,linear probe,224px,roc_auc,0.9,s,n,", "not a whole number"),
    ("busi,x,linear probe,,auroc,0.9,s,n,", "unknown metric"),
    ("busi,x,knn,,accuracy,0.9,s,n,k", "not key=value"),
])
def test_bad_rows_stop_with_file_and_line(tmp_path, line, message):
    f = tmp_path / "p.csv"
    f.write_text(HEADER + "busi,y,knn,,accuracy,80%,s,n,k=11\n" + line + "\n")
    with pytest.raises(MedfmError) as err:
        read_published(f)
    assert message in str(err.value) and f"{f}:3" in str(err.value)


def test_a_duplicate_entry_and_a_missing_column_are_refused(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text(HEADER + "busi,y,knn,,ACC,80%,s,n,\nbusi,y,knn,,accuracy,0.81,s,n,\n")
    with pytest.raises(MedfmError, match=r"p.csv:3: the same .* as .*p.csv:2"):
        read_published(f)
    f.write_text("dataset,backbone,value\nbusi,y,0.8\n")
    with pytest.raises(MedfmError, match="missing column"):
        read_published(f)


def test_compare_matches_entries_and_names_protocol_differences(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text(HEADER + "busi,dino_vitb16,knn,,accuracy,80%,paper,,k=11\n"
                          "busi,dino_vitb16,linear probe,,roc_auc,0.9,paper,,\n"
                          "busi,resnet50,linear probe,,roc_auc,0.85,paper,,\n")
    published = read_published(f)
    entries = [{"dataset": "busi", "backbone": "dino_vitb16", "protocol": "knn", "image_size": None,
                "metric": "accuracy", "value": 0.83, "settings": {"k": "10,20,50"}},
               {"dataset": "busi", "backbone": "dino_vitb16", "protocol": "linear probe", "image_size": None,
                "metric": "roc_auc", "value": 0.88, "settings": {}}]
    matched, unmatched = compare(entries, published)
    assert [m.difference for m in matched] == pytest.approx([0.03, -0.02])
    assert matched[0].protocol_differences == ("published k=11; medfm ran k=10,20,50",)
    assert matched[1].protocol_differences == ()
    assert [u.backbone for u in unmatched] == ["resnet50"]


def test_shipped_study_plot_values_are_marked_as_read_off_a_plot():
    rows = read_published(SHIPPED / "mansoori2025.csv")
    by_key = {(r.dataset, r.backbone, r.metric): r for r in rows}
    # ../shared/PUBLISHED.md, Mansoori et al. 2025 plot: CBIS-DDSM ROC-AUC DINOv2-B .966, CheXpert AIMv2-H .819,
    # ISIC2019 recall SAM2-B .845, APTOS2019 QWK AIMv2-L .915
    assert by_key[("cbis_ddsm", "dinov2_vitb14", "roc_auc")].value == pytest.approx(0.966)
    assert by_key[("chexpert", "aimv2_h14", "roc_auc")].value == pytest.approx(0.819)
    assert by_key[("isic2019", "sam2_b", "recall_macro")].value == pytest.approx(0.845)
    assert by_key[("aptos2019", "aimv2_l14", "quadratic_kappa")].value == pytest.approx(0.915)
    assert len(rows) == 4 * 6 and all(r.note.startswith("read off a plot, ± 0.002") for r in rows)


def test_report_entries_name_the_protocol_size_and_settings_medfm_ran():
    """How `medfm report --published` sees a run: MedMNIST size from the dataset name, the protocol from kind, head
    and depth, the settings it ran (a kNN with k=11 on zero-padded images is like for like with MedMNIST+'s)."""
    from medfm.published import _protocol_differences
    from medfm.report.published_view import dataset_and_size, protocol_of, ran_settings

    assert dataset_and_size("pneumoniamnist_128") == ("pneumoniamnist", 128)
    assert dataset_and_size("pneumoniamnist") == ("pneumoniamnist", 28) and dataset_and_size("busi") == ("busi", None)
    knn = {"kind": "probe", "head": "knn", "metric": "accuracy", "resize": "pad", "head_settings": {"ks": [11]}}
    assert protocol_of(knn) == "knn" and ran_settings(knn) == {"metric": "accuracy", "resize": "pad", "k": "11"}
    assert _protocol_differences(ran_settings(knn), {"k": "11", "resize": "pad"}) == ()
    linear = {"kind": "probe", "head": "linear", "metric": "roc_auc", "head_settings": {"solver": "lbfgs"}}
    assert _protocol_differences(ran_settings(linear), {"optimizer": "adamw", "resize": "pad"}) == (
        "published optimizer=adamw; medfm ran optimizer=lbfgs", "published resize=pad; medfm ran resize=crop")
    tuned = {"kind": "finetune", "head": "linear", "unfreeze": 12, "blocks": 12, "metric": "roc_auc",
             "finetune": {"lr": 1e-4, "epochs": 100}}
    assert protocol_of(tuned) == "end-to-end" and protocol_of(tuned | {"unfreeze": 2}) is None
    assert ran_settings(tuned)["lr"] == "0.0001" and ran_settings(tuned)["schedule"] == "cosine"
