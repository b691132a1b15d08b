rule rine_train:
    """RINE (intermediate CLIP blocks + importance estimator) on the cached tokens."""
    input:
        backbone=clip_dir(),
        manifests=student_manifests,
        train=rine_train_features,
        val=rine_val_features,
        weights=rine_weights,
        processed=rine_online_processed,
    output:
        directory("results/{experiment}/models/{rine}"),
    log:
        "logs/{experiment}/rine_train/{rine}.log",
    benchmark:
        "logs/benchmarks/{experiment}/rine_train/{rine}.tsv"
    conda:
        "../envs/sidflow.yaml"
    threads: 1
    params:
        train_features=rine_view_features,
        settings=rine_settings,
        seed=config["seed"],
        preprocess=config["preprocess"],
        test_crop=config["rine"]["test_crop"],
        online=rine_online,
    script:
        "../scripts/rine_train.py"
