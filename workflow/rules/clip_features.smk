rule clip_backbone:
    """The frozen CLIP image encoder RINE reads (tiny from seed, or a real checkpoint)."""
    output:
        directory(clip_dir()),
    log:
        "logs/clip_backbone.log",
    benchmark:
        "logs/benchmarks/clip_backbone.tsv"
    conda:
        "../envs/sidflow.yaml"
    params:
        settings=config["rine"]["backbone"],
        seed=config["seed"],
    script:
        "../scripts/clip_backbone.py"


rule clip_features:
    """Per-block CLIP CLS tokens of one generator's images, clean and under each
    perturbation (Parquet per view; the encoder is loaded once per job)."""
    input:
        backbone=clip_dir(),
        manifest="data/manifests/{dataset}/{generator}.parquet",
        processed="data/processed/{dataset}/{generator}",
    output:
        clip_feature_files(score_views()),
    log:
        "logs/clip_features/{dataset}/{generator}.log",
    benchmark:
        "logs/benchmarks/clip_features/{dataset}/{generator}.tsv"
    conda:
        "../envs/sidflow.yaml"
    threads: 1
    params:
        chains=view_chains(),
        augment=config["rine"]["augment"],
        seed=config["seed"],
        test_crop=config["rine"]["test_crop"],
        # append-only stores behind the features (outside what Snakemake owns)
        cache_root="results/features/.store",
    script:
        "../scripts/clip_features.py"


if clip_aug_views():

    rule clip_train_views:
        """CLIP tokens of one training generator's images under each seeded draw of the
        training augmentation (``aug1..augK``; one job per generator)."""
        input:
            backbone=clip_dir(),
            manifest="data/manifests/{dataset}/{generator}.parquet",
            processed="data/processed/{dataset}/{generator}",
        output:
            clip_feature_files(clip_aug_views()),
        log:
            "logs/clip_train_views/{dataset}/{generator}.log",
        benchmark:
            "logs/benchmarks/clip_train_views/{dataset}/{generator}.tsv"
        conda:
            "../envs/sidflow.yaml"
        threads: 1
        params:
            chains={view: [] for view in clip_aug_views()},
            augment=config["rine"]["augment"],
            seed=config["seed"],
            test_crop="resize",  # training views are cropped by the augmentation
            cache_root="results/features/.store",
        script:
            "../scripts/clip_features.py"
