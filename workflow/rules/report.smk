rule report:
    """Self-contained HTML report for one experiment."""
    input:
        metrics="results/{experiment}/metrics/metrics.parquet",
        comparisons="results/{experiment}/metrics/comparisons.csv",
        roc="results/{experiment}/metrics/plots/roc.csv",
        processed=report_processed,
        manifests=report_manifests,
        models=report_models,
        gradcam=report_gradcam,
        audit=report_audit,
        probe=report_probe,
    output:
        report(
            "results/report/{experiment}/index.html",
            caption="../report/report.rst",
            category="Report",
        ),
    log:
        "logs/{experiment}/report.log",
    benchmark:
        "logs/benchmarks/{experiment}/report.tsv"
    conda:
        "../envs/sidflow.yaml"
    params:
        config=config,
    script:
        "../scripts/report.py"
