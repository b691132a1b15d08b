rule student_distill:
    """Train a ResNet18 student from labels and the cached teacher mixture."""
    input:
        manifests=student_manifests,
        processed=student_processed,
        caches=student_caches,
    output:
        directory("results/{experiment}/models/{student}"),
    params:
        settings=student_settings,
        student=config["student"],
        preprocess=config["preprocess"],
        seed=config["seed"],
    threads: 1
    conda:
        "../envs/sidflow.yaml"
    log:
        "logs/{experiment}/student_distill/{student}.log",
    script:
        "../scripts/student_distill.py"
