rule student_distill:
    """Train a student (ResNet18 or any zoo architecture) from labels and, with KD, the
    cached teacher mixture."""
    input:
        unpack(student_inputs),
    output:
        directory("results/{experiment}/models/{student}"),
    log:
        "logs/{experiment}/student_distill/{student}.log",
    benchmark:
        "logs/benchmarks/{experiment}/student_distill/{student}.tsv"
    # on the critical path (scores, Grad-CAM and the report wait for it)
    priority: 20
    conda:
        "../envs/sidflow.yaml"
    threads: 1
    params:
        checkpoint="results/{experiment}/checkpoints/{student}",
        cache_paths=student_cache_paths,
        settings=student_training,
        student=student_model,
        preprocess=config["preprocess"],
        seed=config["seed"],
        kfold=KFOLD,
    script:
        "../scripts/student_distill.py"
