rule download:
    """Bring one generator subset to data/raw/<dataset>/<generator>/."""
    output:
        directory("data/raw/{dataset}/{generator}"),
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
