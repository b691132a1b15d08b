rule teacher_finetune:
    """Fine-tune a captioning teacher to say "real" / "fake"."""
    input:
        manifests=teacher_train_manifests,
        processed=teacher_train_processed,
    output:
        directory("results/teachers/{teacher}"),
    params:
        settings=teacher_settings,
        image_size=config["preprocess"]["image_size"],
        seed=config["seed"],
    threads: 1
    conda:
        "../envs/sidflow.yaml"
    log:
        "logs/teacher_finetune/{teacher}.log",
    script:
        "../scripts/teacher_finetune.py"
