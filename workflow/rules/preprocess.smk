rule preprocess:
    """Same decode/resize/crop/JPEG for real and fake; sharded Parquet + quarantine."""
    input:
        "data/raw/{dataset}/{generator}",
    output:
        directory("data/processed/{dataset}/{generator}"),
    params:
        preprocess=config["preprocess"],
    threads: 1
    conda:
        "../envs/sidflow.yaml"
    log:
        "logs/preprocess/{dataset}/{generator}.log",
    script:
        "../scripts/preprocess.py"
