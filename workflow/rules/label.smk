rule label:
    """Manifest per generator: image_id, label, hash-stable split, object class."""
    input:
        "data/processed/{dataset}/{generator}",
    output:
        manifest="data/manifests/{dataset}/{generator}.parquet",
        duplicates="data/manifests/{dataset}/{generator}.duplicates.parquet",
        summary="data/manifests/{dataset}/{generator}.summary.json",
    log:
        "logs/label/{dataset}/{generator}.log",
    benchmark:
        "logs/benchmarks/label/{dataset}/{generator}.tsv"
    conda:
        "../envs/sidflow.yaml"
    params:
        row=generator_row,
        splits=config["splits"],
        object_class=object_class_spec,
    script:
        "../scripts/label.py"
