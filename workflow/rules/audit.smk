rule metadata:
    """Shortcut audit input: format, size, JPEG tables of every raw file (headers only)."""
    input:
        "data/raw/{dataset}/{generator}",
        index="data/raw-index/{dataset}/{generator}.tsv",
    output:
        "data/metadata/{dataset}/{generator}.parquet",
    log:
        "logs/metadata/{dataset}/{generator}.log",
    benchmark:
        "logs/benchmarks/metadata/{dataset}/{generator}.tsv"
    conda:
        "../envs/sidflow.yaml"
    script:
        "../scripts/metadata.py"


rule shortcut_audit:
    """Metadata-only classifier; writes the audit-metadata scores table per generator."""
    input:
        metadata=audit_metadata,
        manifests=report_manifests,
    output:
        scores=audit_score_paths(),
        summary=report(
            "results/{experiment}/audit/shortcut.json",
            caption="../report/audit.rst",
            category="Shortcut audit",
        ),
    log:
        "logs/{experiment}/shortcut_audit.log",
    benchmark:
        "logs/benchmarks/{experiment}/shortcut_audit.tsv"
    conda:
        "../envs/sidflow.yaml"
    params:
        generator_keys=scored_keys(),
        train_keys=PLAN.train_keys(),
        seed=config["seed"],
    script:
        "../scripts/shortcut_audit.py"
