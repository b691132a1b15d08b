"""The whole DAG end to end on a shrunken demo, through Snakemake (a few minutes)."""

import json
import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from helpers import planned_jobs, run_snakemake

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def run(small_run):
    return small_run


def snakemake(cwd, *args):
    return run_snakemake(cwd, "--configfile", "small.yaml", *args)


def test_report_and_metrics(run):
    html = (run / "results/report/smoke/index.html").read_text()
    assert (
        "Per-generator metrics" in html
        and "demo/ae-bilinear" in html
        and "Quarantined inputs" in html
    )
    metrics = pd.read_parquet(run / "results/smoke/metrics/metrics.parquet")
    assert set(metrics["detector"]) == {
        "teacher-vitgpt2",
        "teacher-vitgpt2-caption",
        "teacher-blip2",
        "teacher-blip2-caption",
        "student-kd",
        "student-nokd",
        "rine",
        "rine-mean",
        "audit-metadata",
    }
    assert set(metrics["generator"]) == {
        "real",
        "ae-deconv",
        "ae-bilinear",
        "dcgan-face",
        "mean",
        "all",
    }
    js = json.loads((run / "results/smoke/metrics/metrics.json").read_text())
    clean = metrics[metrics["perturbation"] == "none"]
    row = clean[(clean["detector"] == "student-kd") & (clean["generator"] == "all")].iloc[0]
    assert js["student-kd"]["all/all"]["ap"] == pytest.approx(row["ap"])
    assert f"{row['ap']:.3f}" in html  # the page shows the metric files' numbers
    # the mean over generators: each fake generator once (metrics.csv, metrics.json, the page)
    mean = clean[(clean["detector"] == "student-kd") & (clean["generator"] == "mean")].iloc[0]
    gens = clean[(clean["detector"] == "student-kd") & ~clean["is_real"]]
    gens = gens[~gens["generator"].isin(["all", "mean"])]
    assert mean["ap"] == pytest.approx(gens["ap"].mean()) and mean["n_generators"] == 3
    assert js["student-kd"]["mean/mean"]["ap"] == pytest.approx(mean["ap"])
    assert "mean over generators" in html
    # shortcut audit: the demo's raw files are all PNG of one size, so the metadata
    # classifier can only use file size; its AP is in the metrics and on the page
    audit = clean[(clean["detector"] == "audit-metadata") & (clean["generator"] == "all")].iloc[0]
    assert 0.0 <= audit["ap"] <= 1.0 and "Shortcut audit" in html and f"{audit['ap']:.3f}" in html
    # Grad-CAM: one gallery per student, embedded in the page
    for student in ("student-kd", "student-nokd"):
        index = json.loads((run / f"results/smoke/gradcam/{student}/index.json").read_text())
        assert index["images"] and all((run / f"results/smoke/gradcam/{student}" / r["file"]).exists()
                                       for r in index["images"])  # fmt: skip
    assert html.count("data:image/png;base64,") >= 8 and "Grad-CAM" in html
    assert {"none", "jpeg75", "combo"} == set(metrics["perturbation"])
    robust = metrics[(metrics["perturbation"] == "combo") & (metrics["detector"] == "student-kd")]
    assert (
        len(robust) == 6  # 4 generators, the mean over the 3 fake ones, the pooled row
        and robust["ap"].notna().any()
        and "Robustness to test-time perturbations" in html
    )
    comp = pd.read_csv(run / "results/smoke/metrics/comparisons.csv")
    pooled = comp[(comp["generator"] == "all")].iloc[0]
    assert (pooled["detector"], pooled["baseline"]) == ("student-kd", "student-nokd")
    assert pooled["ap_diff_low"] <= pooled["ap_diff"] <= pooled["ap_diff_high"]
    assert f"AP difference {pooled['ap_diff']:+.4f}" in html and pooled["verdict"] in html
    assert html.count("<svg") >= 3 + 4  # ROC, PR, calibration + one confusion matrix per detector
    rine = metrics[(metrics["detector"] == "rine") & (metrics["generator"] == "all")]
    assert set(rine["perturbation"]) == {"none", "jpeg75", "combo"} and rine["ap"].notna().all()
    card = json.loads((run / "results/smoke/models/rine/card.json").read_text())
    assert "RINE: which encoder blocks matter" in html and len(card["block_importance"]) == 4
    # the paper's ablation without the importance estimator: equal block weights, its own row
    ablation = json.loads((run / "results/smoke/models/rine-mean/card.json").read_text())
    assert (
        ablation["block_importance"] == pytest.approx([0.25] * 4)
        and ablation["rine"]["importance"] == "mean"
    )
    assert (
        clean[(clean["detector"] == "rine-mean") & (clean["generator"] == "all")]["ap"]
        .notna()
        .all()
    )
    roc = pd.read_csv(run / "results/smoke/metrics/plots/roc.csv")
    assert (
        set(roc["detector"]) == set(metrics["detector"])
        and roc[["fpr", "tpr"]].stack().between(0, 1).all()
    )


def test_probe_grid_ranked_in_the_report(run):
    rank = pd.read_csv(run / "results/smoke/probe/ranking.csv")
    assert len(rank) == 2 * 2 and list(rank["rank"]) == [1, 2, 3, 4]
    assert set(rank["backbone"]) == {"effnet-lite0", "effnet-vitgpt2"}
    assert rank["val_ap"].is_monotonic_decreasing and rank["ap[blur]"].between(0, 1).all()
    card = json.loads(
        (run / "results/smoke/probe/cells/effnet-vitgpt2/none/logreg/blur/cell.json").read_text()
    )
    assert card["dim"] == 1280 + 32  # EfficientNet-Lite0 + the tiny teacher's embedding
    cross = pd.read_csv(run / "results/smoke/probe/cross.csv")
    assert len(cross) == 3 * 3 and cross["ap"].between(0, 1).all()
    html = (run / "results/report/smoke/index.html").read_text()
    assert "Probe grid" in html and "Cross-generator matrix" in html
    assert f"{rank['val_ap'].iloc[0]:.3f}" in html


def test_counts_reconcile_and_quarantine_visible(run):
    s = json.loads((run / "data/processed/demo/real/summary.json").read_text())
    assert s["inputs"] == 123 and s["written"] == 120 and s["quarantined"] == 3
    man = pd.read_parquet(run / "data/manifests/demo/real.parquet")
    assert len(man) == 120 and set(man["split"]) == {"train", "val", "test"}


def test_second_run_has_nothing_to_do(run):
    r = snakemake(run, "-n")
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr


def test_new_rine_hyperparameters_reuse_the_clip_cache(run):
    (run / "rine2.yaml").write_text("experiment: {rine: {rine: {contrastive_weight: 0.4}}}\n")
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        "2",
        "-n",
        "--configfile",
        "small.yaml",
        "rine2.yaml",
    ]
    r = subprocess.run(cmd, cwd=run, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = planned_jobs(r.stdout + r.stderr)
    assert (
        jobs["rine_train"] == 1 and jobs["score_rine"] == 4
    )  # 4 generators, each job writing its 3 views (clean + 2 perturbations)
    assert (
        "clip_features" not in jobs
        and "clip_train_views" not in jobs
        and "clip_backbone" not in jobs
        and "student_distill" not in jobs
    )


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0"]  # fmt: skip


def chromium(*args, profile):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs Debian's chromium")
        pytest.skip("chromium not installed (apt-get install chromium)")
    cmd = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


@pytest.mark.browser
def test_report_in_a_real_browser(run, tmp_path):
    """The page loads from disk without console errors or network, its numbers are the
    metric files' numbers, and a screenshot is written."""
    page = (run / "results/report/smoke/index.html").resolve()
    dom = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "p1")
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console  # no script errors, no failed resource loads
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", dom.stdout)  # opens offline
    metrics = pd.read_parquet(run / "results/smoke/metrics/metrics.parquet")
    pooled = metrics[(metrics["generator"] == "all") & (metrics["perturbation"] == "none")]
    for r in pooled.to_dict("records"):
        assert f"{r['ap']:.3f}" in dom.stdout and r["detector"] in dom.stdout
    shot = run / "results/report/smoke/screenshot.png"
    r = chromium(
        f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri(), profile=tmp_path / "p2"
    )
    assert r.returncode == 0 and shot.exists(), r.stderr[-2000:]
    from PIL import Image

    img = Image.open(shot).convert("L")
    assert img.size == (1280, 2400) and len(set(img.getdata())) > 10  # rendered, not blank


def test_snakemake_report_bundles_the_key_figures(run):
    r = snakemake(run, "--report", "snakemake-report.html")
    assert r.returncode == 0, r.stderr[-3000:]
    page = (run / "snakemake-report.html").read_text(errors="replace")
    assert all(c in page for c in ("Grad-CAM", "Shortcut audit", "Metrics", "Report"))
