rule download:
    """Bring one generator subset to data/raw/<dataset>/<generator>/."""
    output:
        raw=directory("data/raw/{dataset}/{generator}"),
        index="data/raw-index/{dataset}/{generator}.tsv",
    log:
        "logs/download/{dataset}/{generator}.log",
    benchmark:
        "logs/benchmarks/download/{dataset}/{generator}.tsv"
    conda:
        "../envs/sidflow.yaml"
    params:
        source=dataset_source,
        row=generator_row,
        seed=config["seed"],
    script:
        "../scripts/download.py"
