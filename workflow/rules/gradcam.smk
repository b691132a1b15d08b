rule gradcam:
    """Grad-CAM gallery of one student: seeded correct and wrong test predictions per generator."""
    input:
        model="results/{experiment}/models/{student}",
        manifests=report_manifests,
        processed=report_processed,
        scores=gradcam_scores,
    output:
        report(
            directory("results/{experiment}/gradcam/{student}"),
            patterns=["{name}.png"],
            caption="../report/gradcam.rst",
            category="Grad-CAM",
            subcategory="{student}",
        ),
    log:
        "logs/{experiment}/gradcam/{student}.log",
    benchmark:
        "logs/benchmarks/{experiment}/gradcam/{student}.tsv"
    conda:
        "../envs/sidflow.yaml"
    params:
        gradcam=config["gradcam"],
        seed=config["seed"],
    script:
        "../scripts/gradcam.py"
