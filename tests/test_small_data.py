"""Honest small-data reporting (issue #20): every per-generator table shows the test images a
row rests on, rows with too few images of a class are marked and listed in a warning box at
the top, a degenerate validation threshold is called so, and probe cells compete for best
detector. The tables come from :func:`evaluate_scores` on synthetic scores, as in a run."""

import copy

import numpy as np
import pandas as pd
import pytest
import yaml

from sidflow.config import ConfigError, validate
from sidflow.evaluate.metrics import evaluate_scores
from sidflow.report.caveats import MARK, degenerate_threshold, is_small, warnings_section
from sidflow.report.context import ReportData
from sidflow.report.html import build_report, render
from sidflow.report.probe_section import probe_section
from sidflow.report.sections_metrics import (
    all_metrics_section,
    per_generator_table,
    robustness_section,
    summary_section,
)

pytestmark = pytest.mark.unit

TRAIN = ["demo/real", "demo/big"]
CELL, WEAK_CELL = "probe:effnet/none/logreg/none", "probe:effnet/none/knn3/none"


def _p(kind: str, label: int, split: str, n: int, rng) -> np.ndarray:
    """Scores of one detector ``kind`` for ``n`` images of a class and split."""
    if kind == "good":  # overlapping classes, a threshold inside the score range
        return rng.uniform(0.4, 1.0, n) if label else rng.uniform(0.0, 0.6, n)
    if kind == "perfect":
        return rng.uniform(0.7, 1.0, n) if label else rng.uniform(0.0, 0.3, n)
    # collapsed: every score near 0 (validation reals 0, fakes 1e-9: the calibrated threshold
    # lands at ~5e-10) while the test scores still rank the classes: AP 1, every image "fake"
    if split == "val":
        return np.full(n, 1e-9 * label)
    return rng.uniform(6e-3, 1e-2, n) if label else rng.uniform(1e-3, 5e-3, n)


def _scores(detectors: dict[str, str], n_small: int = 5, perturbations=("none",)) -> pd.DataFrame:
    """40 real test images, a training generator ``big`` with 100 test fakes and an unseen
    ``small`` with ``n_small``; ``detectors``: name -> kind of scores (see :func:`_p`)."""
    rng = np.random.default_rng(0)
    sets = [("real", 0, "val", 40), ("big", 1, "val", 40), ("real", 0, "test", 40),
            ("big", 1, "test", 100), ("small", 1, "test", n_small)]  # fmt: skip
    frames = []
    for name, kind in detectors.items():
        for perturbation in perturbations:
            for gen, label, split, n in sets:
                if perturbation != "none" and split == "val":
                    continue
                frames.append(pd.DataFrame({
                    "image_id": [f"{gen}-{split}-{i}" for i in range(n)], "dataset": "demo",
                    "generator": gen, "split": split, "label": label, "perturbation": perturbation,
                    "detector": name, "p_fake": _p(kind, label, split, n, rng),
                }))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def _data(detectors=None, n_small: int = 5, **kw) -> ReportData:
    metrics = evaluate_scores(_scores(detectors or {"good": "good"}, n_small), TRAIN)
    return ReportData(experiment="t", metrics=metrics, **kw)


def test_tables_show_counts_and_mark_the_small_generator():
    data = _data()
    wide = per_generator_table(data.metrics, "ap").set_index("generator ")
    assert list(wide.columns[:2]) == ["n_real", "n_fake"]
    assert wide.loc[f"demo/small {MARK}", ["n_real", "n_fake"]].tolist() == [40, 5]
    assert wide.loc["demo/big (train)", ["n_real", "n_fake"]].tolist() == [40, 100]
    real = per_generator_table(data.metrics, "accuracy").set_index("generator ")  # AP: no reals row
    assert real.loc["demo/real (train)", ["n_real", "n_fake"]].tolist() == [40, 0]  # reals only
    # the mean weights the 5-fake generator once: it is marked too; the pooled row is not
    assert f"mean over generators {MARK}" in wide.index and "pooled (all test images)" in wide.index
    page = render(data)
    assert (
        f'<tr class="small"><td class="l">demo/small {MARK}</td><td class="">40</td><td class="">5</td>'
        in page
    )
    assert (
        '<tr><td class="l">demo/big (train)</td><td class="">40</td><td class="">100</td>' in page
    )
    # every per-generator table and the all-metrics table carry the counts and the mark
    assert page.count(f'<td class="l">demo/small {MARK}</td><td class="">40</td>') >= 5
    assert f'<td class="l">small {MARK}</td>' in all_metrics_section(data)


def test_warning_box_lists_the_small_rows_at_the_top():
    data = _data()
    box = warnings_section(data)
    assert 'id="warnings"' in box and "fewer than 30 test images" in box
    assert "demo/small: 5 fakes against 40 reals" in box and "mean over generators" in box
    assert "demo/big" not in box and "demo/real" not in box and "degenerate" not in box
    page = render(data)
    assert page.index('id="warnings"') < page.index("<h2>Summary</h2>") and box in page
    assert "rows of the metrics tables rest on fewer than 30" in summary_section(data)


def test_no_warning_with_enough_data_and_a_normal_threshold():
    data = _data(n_small=60)
    assert 0.1 < data.pooled()["threshold"].iloc[0] < 0.9
    assert warnings_section(data) == ""
    page = render(data)
    assert 'id="warnings"' not in page and 'class="small"' not in page and "degenerate" not in page
    assert is_small(data.metrics, 30).sum() == 0
    # the minimum is configurable: 61 flags the 60-fake generator
    assert "demo/small: 60 fakes" in warnings_section(_data(n_small=60, min_class_count=61))


def test_degenerate_threshold_is_named_in_summary_and_box():
    data = _data({"good": "good", "collapsed": "collapsed"}, n_small=60)
    row = data.pooled().set_index("detector").loc["collapsed"]
    assert row["threshold"] < 1e-6 and row["fn"] + row["tn"] == 0  # the user's 0.000
    summary = summary_section(data)
    assert "Best pooled detector: <b>collapsed</b>" in summary  # AP 1: ranks perfectly
    assert "threshold 0.000 (degenerate" in summary and "Degenerate threshold" in summary
    assert "calls every pooled test image fake" in summary
    box = warnings_section(data)
    assert "degenerate threshold: <b>collapsed</b>" in box and "<b>good</b>" not in box
    assert f"0.000 {MARK}" in summary  # its threshold cell in the pooled table


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ({"threshold": 0.5, "tp": 3, "fp": 1, "tn": 4, "fn": 2}, None),
        ({"threshold": None, "tp": 3, "fp": 1, "tn": 4, "fn": 2}, None),  # caption verdicts
        ({"threshold": 1.0 - 1e-9}, "edge of the [0, 1] score range"),
        ({"threshold": 0.4, "tp": 0, "fp": 0, "tn": 5, "fn": 3}, "every pooled test image real"),
        ({"threshold": 0.4, "tp": 5, "fp": 3, "tn": 0, "fn": 0}, "every pooled test image fake"),
    ],
)
def test_degenerate_threshold_rule(row, needle):
    why = degenerate_threshold(row)
    assert why is None if needle is None else needle in why


def test_probe_cell_can_be_the_best_detector():
    cells = evaluate_scores(_scores({CELL: "perfect", WEAK_CELL: "good"}, n_small=60), TRAIN)
    assert cells["threshold"].between(0.1, 0.9).all()  # validation-calibrated, like any detector
    data = _data(n_small=60, probe_metrics=cells)
    summary = summary_section(data)
    assert (
        f"Best pooled detector: <b>{CELL}</b>" in summary and "the best of 2 by test AP" in summary
    )
    assert WEAK_CELL not in summary and ">good<" in summary  # only the grid's best cell listed
    # a worse cell does not win, but is listed beside the detectors
    weak = evaluate_scores(_scores({WEAK_CELL: "collapsed"}, n_small=60), TRAIN)
    summary = summary_section(_data({"good": "perfect"}, n_small=60, probe_metrics=weak))
    assert "Best pooled detector: <b>good</b>" in summary and WEAK_CELL in summary
    assert f"degenerate threshold: <b>{WEAK_CELL}</b>" in warnings_section(
        _data(n_small=60, probe_metrics=weak)
    )
    assert "Best pooled detector: <b>good</b>" in summary_section(_data(n_small=60))


def test_probe_section_counts_each_generator_column(tmp_path):
    cells = evaluate_scores(_scores({CELL: "perfect"}), TRAIN)
    ranking, cross = tmp_path / "ranking.csv", tmp_path / "cross.csv"
    pd.DataFrame([{"rank": 1, "backbone": "effnet", "reduction": "none", "classifier": "logreg",
                   "transform": "none", "val_ap": 1.0, "test_ap": 1.0, "ap[demo/big]": 1.0,
                   "ap[demo/small]": 1.0}]).to_csv(ranking, index=False)  # fmt: skip
    pd.DataFrame([{"train": a, "test": b, "ap": 0.9, "auc": 0.9, "n_test": n}
                  for a in ("demo/big", "demo/small") for b, n in (("demo/big", 140), ("demo/small", 45))]
                 ).to_csv(cross, index=False)  # fmt: skip
    page = probe_section(ranking, cross, metrics=cells, min_count=30)
    assert '<tr class="counts">' in page and f"<td>5/40 {MARK}</td>" in page
    assert "<td>100/40</td>" in page and "<td>105/40</td>" in page  # test_ap: pooled
    assert f'<tr class="small"><td class="l">demo/small {MARK}</td><td class="">45</td>' in page
    assert '<tr><td class="l">demo/big</td><td class="">140</td><td class="">40</td>' in page
    # without the cells' metrics the total alone flags a column (45 < 2 x 30: a class is short)
    assert f"demo/small {MARK}" in probe_section(ranking, cross)


def test_robustness_tables_carry_counts():
    metrics = evaluate_scores(_scores({"good": "good"}, perturbations=("none", "jpeg")), TRAIN)
    page = robustness_section(ReportData(experiment="t", metrics=metrics))
    assert '<th class="">n_real</th><th class="">n_fake</th><th class="">none</th>' in page
    assert (
        f'<tr class="small"><td class="l">demo/small {MARK}</td><td class="">40</td><td class="">5</td>'
        in page
    )


def test_min_class_count_in_config_reaches_the_report(repo, tmp_path):
    cfg = yaml.safe_load((repo / "config.yaml").read_text())
    schema = repo / "workflow/schemas/config.schema.yaml"
    assert cfg["report"]["min_class_count"] == 30
    no_block = copy.deepcopy(cfg)
    del no_block["report"]
    assert validate(no_block, schema)["report"] == {"min_class_count": 30}  # the default
    with pytest.raises(ConfigError, match="min_class_count"):
        validate({**copy.deepcopy(cfg), "report": {"min_class_count": 0}}, schema)
    path = tmp_path / "metrics.parquet"
    _data().metrics.to_parquet(path)
    for config, marked in (({}, True), ({"report": {"min_class_count": 5}}, False)):
        out = tmp_path / "index.html"
        build_report(path, config, out, "t", detector_kinds={})
        assert ('id="warnings"' in out.read_text()) is marked
