rule label:
    """Manifest per generator: image_id, label, hash-stable split, object class."""
    input:
        "data/processed/{dataset}/{generator}",
    output:
        manifest="data/manifests/{dataset}/{generator}.parquet",
        duplicates="data/manifests/{dataset}/{generator}.duplicates.parquet",
        summary="data/manifests/{dataset}/{generator}.summary.json",
    params:
        row=generator_row,
        splits=config["splits"],
        object_class=object_class_spec,
    conda:
        "../envs/sidflow.yaml"
    log:
        "logs/label/{dataset}/{generator}.log",
    script:
        "../scripts/label.py"
