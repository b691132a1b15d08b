rule preprocess:
    """Same decode/resize/crop/JPEG for real and fake; sharded Parquet + quarantine."""
    input:
        "data/raw/{dataset}/{generator}",
        index="data/raw-index/{dataset}/{generator}.tsv",
    output:
        directory("data/processed/{dataset}/{generator}"),
    log:
        "logs/preprocess/{dataset}/{generator}.log",
    benchmark:
        "logs/benchmarks/preprocess/{dataset}/{generator}.tsv"
    conda:
        "../envs/sidflow.yaml"
    threads: 1
    params:
        preprocess=config["preprocess"],
    script:
        "../scripts/preprocess.py"
