rule teacher_finetune:
    """Fine-tune a captioning teacher to say "real" / "fake" (its folder keyed by what
    determines it: Plan.teacher_key)."""
    input:
        manifests=teacher_train_manifests,
        processed=teacher_train_processed,
    output:
        directory("results/teachers/{teacher}/{teacher_key}"),
    log:
        "logs/teacher_finetune/{teacher}/{teacher_key}.log",
    benchmark:
        "logs/benchmarks/teacher_finetune/{teacher}/{teacher_key}.tsv"
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
