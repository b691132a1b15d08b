"""Metrics equal scikit-learn's; edge cases give None with counts, never NaN crashes."""

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, roc_auc_score

from sidflow.evaluate.metrics import binary_metrics, evaluate_scores, mean_row, metrics_json
from sidflow.thresholds import calibrate_threshold


def test_binary_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.clip(y * 0.3 + rng.random(500) * 0.7, 0, 1)
    m = binary_metrics(y, p, 0.4)
    pred = (p >= 0.4).astype(int)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["accuracy_at_0.5"] == pytest.approx(accuracy_score(y, (p >= 0.5).astype(int)))
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    assert m["ap"] == pytest.approx(average_precision_score(y, p))
    assert m["auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["real_accuracy"] == pytest.approx((pred[y == 0] == 0).mean())
    assert m["fake_accuracy"] == pytest.approx((pred[y == 1] == 1).mean())


def test_ties_are_handled_like_sklearn():
    y = np.array([0, 1, 0, 1, 1, 0])
    p = np.array([0.5, 0.5, 0.5, 0.9, 0.1, 0.1])
    m = binary_metrics(y, p, 0.5)
    assert m["ap"] == pytest.approx(average_precision_score(y, p))
    assert m["auc"] == pytest.approx(roc_auc_score(y, p))


def test_one_class_gives_none_not_nan():
    m = binary_metrics([0, 0, 0], [0.1, 0.7, 0.2], 0.5)
    assert m["ap"] is None and m["auc"] is None and m["fake_accuracy"] is None
    assert m["real_accuracy"] == pytest.approx(2 / 3) and m["n_fake"] == 0 and m["f1"] is None


def test_empty_generator_gives_counts_and_none():
    m = binary_metrics([], [], 0.5)
    assert m["n_real"] == 0 and m["n_fake"] == 0 and m["accuracy"] is None and m["ap"] is None


def test_threshold_calibration_separates_validation_data():
    y = [0, 0, 0, 1, 1, 1]
    p = [0.01, 0.02, 0.03, 0.05, 0.06, 0.07]  # a detector scoring everything low
    t = calibrate_threshold(y, p)
    assert 0.03 < t < 0.05
    with pytest.raises(ValueError, match="both classes"):
        calibrate_threshold([1, 1], [0.2, 0.3])


def _scores(detector, gen, label, split, p):
    return pd.DataFrame({"image_id": [f"{gen}{split}{i}" for i in range(len(p))], "detector": detector, "dataset": "d",
                         "generator": gen, "split": split, "label": label, "perturbation": "none", "p_fake": p})  # fmt: skip


def test_evaluate_uses_validation_threshold_and_reports_each_generator():
    # val: real ~0.1, fake ~0.3 -> threshold between; test fakes of "b" are at 0.25: caught only
    # thanks to the validation threshold (at 0.5 they would all be missed).
    s = pd.concat([
        _scores("det", "real", 0, "val", [0.1, 0.12, 0.11]), _scores("det", "a", 1, "val", [0.3, 0.31, 0.29]),
        _scores("det", "real", 0, "test", [0.1, 0.1, 0.13, 0.12]), _scores("det", "a", 1, "test", [0.3, 0.35]),
        _scores("det", "b", 1, "test", [0.25, 0.26, 0.27]),
    ])  # fmt: skip
    t = evaluate_scores(s, ["d/real", "d/a"]).set_index("generator")
    assert 0.12 < t.loc["b", "threshold"] < 0.29
    assert t.loc["b", "fake_accuracy"] == 1.0 and t.loc["b", "accuracy_at_0.5"] == pytest.approx(
        4 / 7
    )
    assert bool(t.loc["a", "in_distribution"]) and not bool(t.loc["b", "in_distribution"])
    assert t.loc["b", "n_real"] == 4 and t.loc["b", "n_fake"] == 3
    assert (
        t.loc["all", "n_fake"] == 5 and t.loc["real", "ap"] is None or np.isnan(t.loc["real", "ap"])
    )
    js = metrics_json(t.reset_index())
    assert "ap" not in js["det"]["d/real"] and js["det"]["d/b"]["fake_accuracy"] == 1.0


def test_evaluate_refuses_without_validation_rows():
    s = _scores("det", "a", 1, "test", [0.3])
    with pytest.raises(ValueError, match="no validation scores"):
        evaluate_scores(s, ["d/a"])


def test_new_metrics_match_sklearn_on_fixed_inputs():
    from sklearn.metrics import brier_score_loss, confusion_matrix, roc_curve

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    p = np.clip(y * 0.3 + rng.random(400) * 0.7, 0, 1)
    m = binary_metrics(y, p, 0.5, n_boot=200)
    tn, fp, fn, tp = confusion_matrix(y, p >= 0.5).ravel()
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (tn, fp, fn, tp)
    assert m["brier"] == pytest.approx(brier_score_loss(y, p))
    fpr, tpr, _ = roc_curve(y, p)
    assert m["tpr_at_fpr_5"] == pytest.approx(tpr[fpr <= 0.05].max())
    assert m["tpr_at_fpr_1"] <= m["tpr_at_fpr_5"]
    assert m["accuracy_ci_low"] <= m["accuracy"] <= m["accuracy_ci_high"]
    assert m["ap_ci_low"] <= m["ap"] <= m["ap_ci_high"] and m["ap_ci_high"] - m["ap_ci_low"] < 0.2


def test_ece_of_calibrated_and_overconfident_scores():
    from sidflow.evaluate.metrics import expected_calibration_error

    rng = np.random.default_rng(0)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(int)  # calibrated by construction
    assert expected_calibration_error(y, p) < 0.02
    assert expected_calibration_error(y, (p > 0.5).astype(float)) > 0.2  # hard 0/1 answers


def test_weighted_ap_equals_sklearn_with_ties_and_weights():
    from sklearn.metrics import average_precision_score

    from sidflow.evaluate.bootstrap import _sorted_groups, weighted_ap

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300).astype(float)
    p = np.round(rng.random(300), 1)  # many ties
    w = rng.integers(0, 3, (4, 300)).astype(float)
    order, ends = _sorted_groups(p)
    ours = weighted_ap(y[order], w[:, order], ends)
    for row, value in zip(w, ours, strict=True):
        assert value == pytest.approx(average_precision_score(y, p, sample_weight=row))


def test_paired_difference_sees_a_real_gap_and_no_gap():
    from sidflow.evaluate.bootstrap import paired_difference

    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 2000)
    good = np.clip(y * 0.6 + rng.random(2000) * 0.4, 0, 1)
    bad = rng.random(2000)
    d = paired_difference(y, good, bad, 0.5, 0.5, n_boot=200)
    assert d["ap_diff"] > 0.3 and d["significant_ap"] and d["accuracy_diff_ci"][0] > 0
    same = paired_difference(y, good, good, 0.5, 0.5, n_boot=200)
    assert same["ap_diff"] == 0 and not same["significant_ap"]
    with pytest.raises(ValueError, match="same images"):
        paired_difference(y, good, bad[:10], 0.5, 0.5)


def test_mean_over_generators_differs_from_pooled_on_a_worked_example():
    # 4 test reals at 0.1 (all correct at a threshold of 0.2). Generator "big": 8 fakes, all
    # caught (0.9); generator "small": 2 fakes, both missed (0.15). Pooled fake accuracy weights
    # images: 8/10 = 0.8; the mean over generators weights generators: (1 + 0) / 2 = 0.5.
    s = pd.concat([
        _scores("det", "real", 0, "val", [0.1, 0.1]), _scores("det", "big", 1, "val", [0.3, 0.3]),
        _scores("det", "real", 0, "test", [0.1] * 4), _scores("det", "big", 1, "test", [0.9] * 8),
        _scores("det", "small", 1, "test", [0.15] * 2),
    ])  # fmt: skip
    t = evaluate_scores(s, ["d/real", "d/big"]).set_index("generator")
    assert t.loc["all", "fake_accuracy"] == pytest.approx(0.8)
    assert t.loc["mean", "fake_accuracy"] == pytest.approx(0.5)
    # accuracy: big 12/12, small 4/6 -> mean 5/6; pooled 12/14
    assert t.loc["mean", "accuracy"] == pytest.approx((1 + 4 / 6) / 2)
    assert t.loc["all", "accuracy"] == pytest.approx(12 / 14)
    # AP: big 1.0; small: its fakes (0.15) still rank above every real (0.1) -> 1.0
    assert t.loc["mean", "ap"] == pytest.approx(1.0)
    assert t.loc["mean", "n_generators"] == 2 and t.loc["mean", "n_fake"] == 10
    assert t.loc["mean", "n_real"] == 4 and t.loc["mean", "dataset"] == "mean"
    # the real row and the pooled row are not averaged in; intervals are not defined for a mean
    assert t.loc["mean", "real_accuracy"] == pytest.approx(1.0)
    assert t.loc["mean", "ap_ci_low"] is None or np.isnan(t.loc["mean", "ap_ci_low"])
    reals_only = t.reset_index()[t.reset_index()["generator"] == "real"].to_dict("records")
    assert mean_row(reals_only, 4) is None  # no fake generator: no mean row


def test_caption_verdicts_decide_accuracy_and_other_counts_as_wrong():
    y = [0, 0, 0, 0, 1, 1, 1]
    verdict = ["real", "real", "other", "fake", "fake", "fake", "other"]
    p = [0.1, 0.2, 0.3, 0.9, 0.8, 0.7, 0.95]  # the likelihood score: ranks perfectly but for one
    m = binary_metrics(y, p, threshold=0.5, verdict=verdict, n_boot=200)
    assert m["accuracy"] == pytest.approx(4 / 7) and m["other"] == 2
    assert m["real_accuracy"] == pytest.approx(2 / 4) and m["fake_accuracy"] == pytest.approx(2 / 3)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 2, 1)
    assert m["f1"] == pytest.approx(2 * 2 / (3 + 3)) and m["threshold"] is None
    assert m["accuracy_at_0.5"] is None
    assert m["ap"] == pytest.approx(average_precision_score(y, p))  # AP still ranks p
    assert m["accuracy_ci_low"] <= m["accuracy"] <= m["accuracy_ci_high"] < 1.0
    # the same scores thresholded instead: another accuracy, no "other"
    plain = binary_metrics(y, p, threshold=0.5, n_boot=0)
    assert plain["accuracy"] == pytest.approx(6 / 7) and plain["other"] is None


def test_a_paired_fake_set_is_scored_only_against_its_own_reals():
    # two fake sets, each shipped with its own reals; set A's reals are easy (0.0), set B's
    # reals look fake (0.9). Paired, A is perfect; unpaired, A would be judged against B's reals.
    s = pd.concat([
        _scores("det", "a-real", 0, "val", [0.1, 0.2]), _scores("det", "a", 1, "val", [0.8, 0.9]),
        _scores("det", "a-real", 0, "test", [0.0] * 3), _scores("det", "a", 1, "test", [0.7] * 3),
        _scores("det", "b-real", 0, "test", [0.9] * 3), _scores("det", "b", 1, "test", [0.95] * 3),
    ])  # fmt: skip
    pairs = {"d/a": "d/a-real", "d/b": "d/b-real"}
    paired = evaluate_scores(s, ["d/a-real", "d/a"], pairs).set_index("generator")
    assert paired.loc["a", "n_real"] == 3 and paired.loc["a", "ap"] == pytest.approx(1.0)
    assert paired.loc["b", "n_real"] == 3 and paired.loc["b", "real_accuracy"] == 0.0
    unpaired = evaluate_scores(s, ["d/a-real", "d/a"]).set_index("generator")
    assert unpaired.loc["a", "n_real"] == 6 and unpaired.loc["a", "ap"] < 1.0
    # the mean over sets averages each set against its own reals
    assert paired.loc["mean", "ap"] == pytest.approx((1.0 + paired.loc["b", "ap"]) / 2)
