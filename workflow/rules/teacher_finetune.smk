rule teacher_finetune:
    """Fine-tune a captioning teacher to say "real" / "fake"."""
    input:
        manifests=teacher_train_manifests,
        processed=teacher_train_processed,
    output:
        directory("results/teachers/{teacher}"),
    log:
        "logs/teacher_finetune/{teacher}.log",
    benchmark:
        "logs/benchmarks/teacher_finetune/{teacher}.tsv"
    # longest step and the head of the critical path: start it as soon as its inputs exist
    priority: 30
    conda:
        "../envs/sidflow.yaml"
    threads: 1
    params:
        settings=teacher_settings,
        image_size=config["preprocess"]["image_size"],
        seed=config["seed"],
    script:
        "../scripts/teacher_finetune.py"
