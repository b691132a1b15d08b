rule clip_backbone:
    """The frozen CLIP image encoder RINE reads (tiny from seed, or a real checkpoint)."""
    output:
        directory("results/backbones/clip"),
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
    """Per-block CLIP CLS tokens of one generator's images under one view (Parquet)."""
    input:
        backbone="results/backbones/clip",
        manifest="data/manifests/{dataset}/{generator}.parquet",
        processed="data/processed/{dataset}/{generator}",
    output:
        "results/features/clip/{dataset}/{generator}/{view}.parquet",
    log:
        "logs/clip_features/{dataset}/{generator}/{view}.log",
    benchmark:
        "logs/benchmarks/clip_features/{dataset}/{generator}/{view}.tsv"
    conda:
        "../envs/sidflow.yaml"
    threads: 1
    params:
        chain=view_chain,
        augment=config["rine"]["augment"],
        seed=config["seed"],
        # append-only stores behind the features (outside what Snakemake owns)
        cache_root="results/features/.store",
    script:
        "../scripts/clip_features.py"
