rule download:
    """Bring one generator subset to data/raw/<dataset>/<generator>/."""
    output:
        directory("data/raw/{dataset}/{generator}"),
    params:
        source=dataset_source,
        row=generator_row,
        seed=config["seed"],
    conda:
        "../envs/sidflow.yaml"
    log:
        "logs/download/{dataset}/{generator}.log",
    script:
        "../scripts/download.py"
