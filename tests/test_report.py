"""The report's pieces: the one number formatter and the section functions (each returns ""
when it has nothing to show); detectors' kinds come from the plan, never from their names."""

import json

import numpy as np
import pandas as pd
import pytest

from sidflow.registry import DETECTOR_KINDS
from sidflow.report.context import ReportData
from sidflow.report.format import MISSING, ci, num, table
from sidflow.report.html import SECTIONS, render
from sidflow.report.sections import audit_section, gradcam_section
from sidflow.report.sections_metrics import (
    ablation_section,
    all_metrics_section,
    curves_section,
    robustness_section,
    summary_section,
)
from sidflow.report.sections_models import dataset_card_section, models_section, rine_section

pytestmark = pytest.mark.unit

KINDS = {"student-kd": "student", "teacher-t": "teacher", "audit-metadata": "audit"}


@pytest.mark.parametrize(
    ("value", "kwargs", "text"),
    [
        (0.91234, {}, "0.912"),
        (np.float64(0.5), {}, "0.500"),
        (np.float32(0.25), {}, "0.250"),
        (0.123456, {"digits": 4, "sign": True}, "+0.1235"),
        (-0.01, {"digits": 4, "sign": True}, "-0.0100"),
        (0.529, {"digits": 2}, "0.53"),
        (75.0, {"digits": 0}, "75"),
        (42, {}, "42"),
        (np.int64(7), {}, "7"),
        (3, {"sign": True}, "+3"),
        (True, {}, "True"),
        (np.bool_(False), {}, "False"),
        (None, {}, MISSING),
        (float("nan"), {}, MISSING),
        (pd.NA, {}, MISSING),
        ("a<b", {}, "a&lt;b"),
    ],
)
def test_one_number_formatter(value, kwargs, text):
    assert num(value, **kwargs) == text


def test_interval_and_table_use_the_formatter():
    assert ci(0.81, 0.9349) == "[0.810, 0.935]" and ci(None, 0.5) == MISSING
    assert ci(float("nan"), float("nan")) == MISSING
    html = table(pd.DataFrame({"detector": ["x"], "ap": [0.87654], "n": [12]}), left=("detector",))
    assert '<td class="l">x</td><td class="">0.877</td><td class="">12</td>' in html
    assert '<th class="l">detector</th>' in html


def _metrics() -> pd.DataFrame:
    rows = []
    for det, ap in (("student-kd", 0.8), ("teacher-t", 0.7), ("audit-metadata", 0.99)):
        for gen, in_dist in (("demo/fake", True), ("all/all", False)):
            d, g = gen.split("/")
            rows.append({"detector": det, "perturbation": "none", "dataset": d, "generator": g,
                         "in_distribution": in_dist, "ap": ap, "auc": ap, "accuracy": ap - 0.1,
                         "threshold": 0.5, "n_real": 10, "n_fake": 10, "is_real": False})  # fmt: skip
    return pd.DataFrame(rows)


def _data(**kw) -> ReportData:
    return ReportData(
        experiment="t", metrics=_metrics(), kinds=ReportData.resolve_kinds(KINDS), **kw
    )


def test_sections_without_data_show_nothing():
    empty = _data()
    assert ablation_section(empty) == ""  # no comparisons file
    assert curves_section(empty) == ""
    assert robustness_section(empty) == ""  # nothing perturbed
    assert rine_section(empty) == "" and models_section(empty) == ""
    assert audit_section(None, empty.metrics, empty.kinds) == ""
    assert gradcam_section({}) == "" and gradcam_section(None) == ""
    no_rows = ReportData(experiment="t", metrics=_metrics().iloc[:0])
    assert summary_section(no_rows) == ""
    assert all_metrics_section(ReportData(experiment="t", metrics=pd.DataFrame())) == ""
    assert "No KD student" in ablation_section(_data(comparisons=pd.DataFrame()))


def test_summary_ranks_by_kind_not_by_name():
    """The audit (a control, not ranked) has the best AP but is never the best detector."""
    data = _data()
    html = summary_section(data)
    assert "Best pooled detector: <b>student-kd</b>, AP 0.800" in html
    assert "audit-metadata" not in html and "teacher-t" in html
    # the same control under another name is still left out: its kind says so
    renamed = _metrics().replace({"audit-metadata": "meta-check"})
    data = ReportData(
        experiment="t",
        metrics=renamed,
        kinds=ReportData.resolve_kinds({**KINDS, "meta-check": "audit"}),
    )
    assert "meta-check" not in summary_section(data)
    assert DETECTOR_KINDS.get("audit").ranked is False


def test_audit_section_reads_the_audit_detector_by_kind(tmp_path):
    summary = tmp_path / "shortcut.json"
    summary.write_text(json.dumps({
        "train_images": 20, "features": ["format"], "importance_val_ap_drop": {"format": 0.2},
        "generators": {"demo/fake": {"n": 5, "formats": "PNG", "median_size": "64x64",
                                     "median_kb": 1.5, "median_jpeg_quality": None}},
    }))  # fmt: skip
    data = _data()
    html = audit_section(summary, data.metrics, data.kinds)
    # audit AP 0.990 flags the generator; the best detector AP is the student's, not the audit's
    assert "<td>0.990</td><td>0.800</td>" in html and "Warning" in html
    assert "<td>1.50</td><td>–</td>" in html and "format +0.200" in html


def test_dataset_card_and_page(tmp_path):
    folder = tmp_path / "processed"
    folder.mkdir()
    (folder / "summary.json").write_text('{"inputs": 3, "written": 2, "quarantined": 1}')
    pd.DataFrame({"source_path": ["x.png"], "reason": ["bad"], "detail": ["d"]}).to_parquet(
        folder / "quarantine.parquet"
    )
    man = tmp_path / "m.summary.json"
    man.write_text('{"exact_duplicates": 0, "cross_split_duplicates": 0, "splits": {"train": 2}}')
    data = _data(
        processed_dirs={"demo/fake": str(folder)}, manifest_summaries={"demo/fake": str(man)}
    )
    card = dataset_card_section(data)
    assert "<h2>Dataset card</h2>" in card and "Quarantined inputs" in card and "x.png" in card
    page = render(data)
    assert page.startswith("<!doctype html>") and page.endswith("</body></html>")
    assert card in page and summary_section(data) in page
    assert all(isinstance(section(data), str) for section in SECTIONS)


def test_confusion_matrix_per_fake_generator():
    from sidflow.report.sections_metrics import per_generator_confusions

    m = _metrics()
    counts = {"tn": 8, "fp": 2, "fn": 3, "tp": 7}
    extra = [{**m.iloc[0].to_dict(), "generator": g, **counts} for g in ("gan", "diffusion")]
    real = {**m.iloc[0].to_dict(), "generator": "real", "is_real": True, **counts}
    mean = {**m.iloc[0].to_dict(), "dataset": "mean", "generator": "mean", **counts}
    data = ReportData(experiment="t", metrics=pd.concat([m, pd.DataFrame(extra + [real, mean])]),
                      kinds=ReportData.resolve_kinds(KINDS))  # fmt: skip
    page = per_generator_confusions(data)
    assert page.count("<details>") == 1 and "<summary>student-kd</summary>" in page
    # one picture per fake generator (not the real row, the mean or the pooled one)
    assert page.count("<svg") == 2 and "demo/gan" in page and "demo/diffusion" in page
    assert "demo/real" not in page and "mean/mean" not in page
    assert per_generator_confusions(_data()) == ""  # no counts: nothing drawn


def test_finetune_cost_table_puts_lora_beside_full(tmp_path):
    from sidflow.report.sections_models import finetune_cost_section

    cards = {}
    for name, mode, trainable in (
        ("teacher-blip2-lora", "lora", 1_000),
        ("teacher-blip2-full", "full", 90_000),
    ):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"finetune_cost": {"mode": mode, "trainable_params": trainable,
                                                      "total_params": 100_000, "train_seconds": 12.5,
                                                      "peak_memory_mb": 812.0, "device": "cpu"}}))  # fmt: skip
        cards[name] = str(path)
    m = _metrics()
    m = pd.concat(
        [m, m[m["detector"] == "teacher-t"].assign(detector="teacher-blip2-lora", ap=0.61)]
    )
    page = finetune_cost_section(ReportData(experiment="t", metrics=m, model_cards=cards))
    assert "LoRA vs full" in page and page.index("teacher-blip2-full") < page.index(
        "teacher-blip2-lora"
    )
    assert "1.000" in page and "90.000" in page  # trainable %: 1 and 90
    assert "0.610" in page  # the LoRA teacher's pooled test AP beside its cost
    assert finetune_cost_section(_data()) == ""


def test_rine_variants_ranked_by_validation_ap(tmp_path):
    from sidflow.report.sections_models import rine_ranking

    cards = {}
    for name, val_ap, imp in (
        ("rine", 0.9, "learned"),
        ("rine-mean", 0.95, "mean"),
        ("rine-grid-n1-d8", 0.7, "learned"),
    ):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"detector": "rine", "val_ap": val_ap, "block_importance": [0.5, 0.5],
                                    "rine": {"nproj": 1, "proj_dim": 8, "importance": imp},
                                    "train": {"contrastive_weight": 0.2, "lr": 0.001, "epochs": 1}}))  # fmt: skip
        cards[name] = str(path)
    m = pd.concat([_metrics().iloc[:1].assign(detector=n, generator="all", ap=a) for n, a in
                   (("rine", 0.8), ("rine-mean", 0.6), ("rine-grid-n1-d8", 0.99))])  # fmt: skip
    page = rine_ranking(ReportData(experiment="t", metrics=m, model_cards=cards))
    assert "ranked by validation AP" in page
    # the order follows validation AP (0.95, 0.9, 0.7), not the test AP shown beside it
    assert page.index("rine-mean") < page.index(">rine<") < page.index("rine-grid-n1-d8")
    assert "0.990" in page and ">mean<" in page
    assert (
        rine_ranking(ReportData(experiment="t", metrics=m, model_cards={"rine": cards["rine"]}))
        == ""
    )
