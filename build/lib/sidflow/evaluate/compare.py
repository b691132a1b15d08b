"""Did distillation help? Paired comparisons of detectors on the same test images.

    pairs = [("student-kd", "student-nokd")]
    table = compare_detectors(scores, metrics, pairs)

For every pair (A, B) and every test generator (plus ``all``), A and B are compared
on exactly the same images with a paired bootstrap: the accuracy difference (each
at its own validation-calibrated threshold, taken from the metrics table) and the
AP difference, with 95% intervals. An interval that excludes zero is marked
significant; the report words its verdict from these rows only.
"""

from __future__ import annotations

import pandas as pd

from sidflow.evaluate.bootstrap import paired_difference


def comparison_pairs(students: dict, run: list[str]) -> list[tuple[str, str]]:
    """(student with teachers, no-KD baseline) for every such pair among ``run``."""
    base = [
        s for s in run if students[s].get("alpha", 1.0) == 0 and students[s].get("beta", 0.0) == 0
    ]
    kd = [s for s in run if s not in base]
    return [(a, b) for a in kd for b in base]


def _test_sets(test: pd.DataFrame):
    for (dataset, generator), g in test.groupby(["dataset", "generator"], sort=True):
        if g["label"].iloc[0] == 1:
            reals = test[(test["dataset"] == dataset) & (test["label"] == 0)]
            yield (
                dataset,
                generator,
                pd.concat([reals if len(reals) else test[test["label"] == 0], g]),
            )
    yield "all", "all", test


def compare_detectors(
    scores: pd.DataFrame, metrics: pd.DataFrame, pairs, n_boot: int = 1000
) -> pd.DataFrame:
    rows = []
    scores = scores[(scores["perturbation"] == "none") & (scores["split"] == "test")]
    thr = metrics[metrics["perturbation"] == "none"].groupby("detector")["threshold"].first()
    for a, b in pairs:
        sa, sb = scores[scores["detector"] == a], scores[scores["detector"] == b]
        if sa.empty or sb.empty:
            continue
        joined = sa.merge(
            sb[["image_id", "p_fake"]], on="image_id", suffixes=("_a", "_b"), validate="one_to_one"
        )
        for dataset, generator, part in _test_sets(joined):
            if part["label"].nunique() < 2:
                continue
            d = paired_difference(part["label"], part["p_fake_a"], part["p_fake_b"], float(thr[a]), float(thr[b]),
                                  n_boot=n_boot)  # fmt: skip
            rows.append({"detector": a, "baseline": b, "dataset": dataset, "generator": generator,
                         "accuracy_diff": d["accuracy_diff"], "accuracy_diff_low": d["accuracy_diff_ci"][0],
                         "accuracy_diff_high": d["accuracy_diff_ci"][1], "ap_diff": d["ap_diff"],
                         "ap_diff_low": d["ap_diff_ci"][0], "ap_diff_high": d["ap_diff_ci"][1], "n": d["n"],
                         "verdict": verdict(d)})  # fmt: skip
    cols = ["detector", "baseline", "dataset", "generator", "accuracy_diff", "accuracy_diff_low",
            "accuracy_diff_high", "ap_diff", "ap_diff_low", "ap_diff_high", "n", "verdict"]  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def verdict(d: dict) -> str:
    """'helped' / 'hurt' when the AP interval excludes zero, else 'no significant difference'."""
    if d["significant_ap"]:
        return "helped" if d["ap_diff"] > 0 else "hurt"
    return "no significant difference"
