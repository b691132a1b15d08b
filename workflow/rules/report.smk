rule report:
    """Self-contained HTML report for one experiment."""
    input:
        unpack(report_inputs),
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
        processed_dirs=report_processed_dirs,
        manifest_summaries=report_manifest_summaries,
        model_cards=report_model_cards,
        gradcam_dirs=report_gradcam,
        detector_kinds=report_detector_kinds,
        dataset_notes=report_dataset_notes,
        # rows resting on fewer test images of a class are marked and listed
        min_class_count=config["report"]["min_class_count"],
        # the script renders snakemake.config; this digest reruns the report when it changes
        config_digest=report_config_digest,
    script:
        "../scripts/report.py"
