rule probe_features:
    """Frozen-backbone features of one generator under one transform (cached per image)."""
    input:
        unpack(probe_feature_inputs),
    output:
        "results/features/probe/{backbone}/{backbone_key}/{transform}/{dataset}/{generator}.parquet",
    log:
        "logs/probe_features/{backbone}/{backbone_key}/{transform}/{dataset}/{generator}.log",
    benchmark:
        "logs/benchmarks/probe_features/{backbone}/{backbone_key}/{transform}/{dataset}/{generator}.tsv"
    conda:
        "../envs/sidflow.yaml"
    threads: 1
    params:
        spec=probe_backbone_spec,
        chain=probe_chain,
        # append-only stores behind the features (outside what Snakemake owns)
        cache_root="results/cache/probe",
    script:
        "../scripts/probe_features.py"


rule probe_fit:
    """One grid cell: reduction + classifier on cached features; scores and metrics."""
    input:
        probe_cell_inputs,
    output:
        card="results/{experiment}/probe/cells/{backbone}/{reduction}/{classifier}/{transform}/cell.json",
        model="results/{experiment}/probe/cells/{backbone}/{reduction}/{classifier}/{transform}/model.skops",
        scores="results/{experiment}/probe/cells/{backbone}/{reduction}/{classifier}/{transform}/scores.parquet",
        metrics="results/{experiment}/probe/cells/{backbone}/{reduction}/{classifier}/{transform}/metrics.parquet",
    log:
        "logs/{experiment}/probe_fit/{backbone}/{reduction}/{classifier}/{transform}.log",
    benchmark:
        "logs/benchmarks/{experiment}/probe_fit/{backbone}/{reduction}/{classifier}/{transform}.tsv"
    conda:
        "../envs/sidflow.yaml"
    threads: 1
    params:
        features=probe_cell_features,
        reduction_spec=probe_reduction_spec,
        train_generators=config["experiment"]["train_generators"],
        seed=config["seed"],
        max_train=config["probe"]["max_train"],
    script:
        "../scripts/probe_fit.py"


rule probe_rank:
    """Every cell ranked by validation AP, with test AP per generator and transform."""
    input:
        probe_cell_cards,
    output:
        ranking=report(
            "results/{experiment}/probe/ranking.csv",
            caption="../report/probe.rst",
            category="Probe grid",
        ),
        metrics="results/{experiment}/probe/metrics.parquet",
    log:
        "logs/{experiment}/probe_rank.log",
    conda:
        "../envs/sidflow.yaml"
    script:
        "../scripts/probe_rank.py"


rule probe_cross:
    """Cross-generator matrix: train on real + A, test on real + every B."""
    input:
        probe_cross_inputs,
    output:
        "results/{experiment}/probe/cross.csv",
    log:
        "logs/{experiment}/probe_cross.log",
    conda:
        "../envs/sidflow.yaml"
    threads: 1
    params:
        parts=probe_cross_parts,
        reduction_spec=probe_cross_reduction,
        classifier=config["probe"]["cross"]["classifier"],
        seed=config["seed"],
        max_train=config["probe"]["max_train"],
    script:
        "../scripts/probe_cross.py"


rule probe_cross_best:
    """Cross-generator matrices of each backbone's best cell (by validation AP) under every
    train-time transform of the grid, tested on clean features."""
    input:
        ranking="results/{experiment}/probe/ranking.csv",
        features=probe_cross_best_inputs,
    output:
        "results/{experiment}/probe/cross-best.csv",
    log:
        "logs/{experiment}/probe_cross_best.log",
    conda:
        "../envs/sidflow.yaml"
    threads: 1
    params:
        features=probe_cross_best_features,
        reductions=config["probe"]["reductions"],
        seed=config["seed"],
        max_train=config["probe"]["max_train"],
    script:
        "../scripts/probe_cross_best.py"
