rule teacher_cache:
    """Teacher logits, p_fake, caption and embedding for every manifest row (Parquet)."""
    input:
        teacher="results/teachers/{teacher}/{teacher_key}",
        manifest="data/manifests/{dataset}/{generator}.parquet",
        processed="data/processed/{dataset}/{generator}",
    output:
        "results/cache/{teacher}/{teacher_key}/{dataset}/{generator}.parquet",
    log:
        "logs/teacher_cache/{teacher}/{teacher_key}/{dataset}/{generator}.log",
    benchmark:
        "logs/benchmarks/teacher_cache/{teacher}/{teacher_key}/{dataset}/{generator}.tsv"
    # on the critical path (students wait for it)
    priority: 20
    conda:
        "../envs/sidflow.yaml"
    threads: 1
    params:
        preprocess=config["preprocess"],
        # append-only stores behind the cache (outside what Snakemake owns)
        cache_root="results/cache/.store",
    script:
        "../scripts/teacher_cache.py"
