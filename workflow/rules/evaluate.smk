rule score_teacher:
    """A teacher's scores tables, read from its cache (the teacher is not re-run): its
    class-caption likelihood, and its generated caption as a verdict."""
    input:
        cache=teacher_cache_file,
        manifest="data/manifests/{dataset}/{generator}.parquet",
    output:
        scores="results/{experiment}/scores/teacher-{teacher}/{dataset}/{generator}/none.parquet",
        # the same teacher judged by its generated caption (evaluated if caption_detectors)
        captions="results/{experiment}/scores/teacher-{teacher}-caption/{dataset}/{generator}/none.parquet",
    log:
        "logs/{experiment}/score/teacher-{teacher}/{dataset}/{generator}.log",
    benchmark:
        "logs/benchmarks/{experiment}/score/teacher-{teacher}/{dataset}/{generator}.tsv"
    conda:
        "../envs/sidflow.yaml"
    params:
        detector=teacher_detector,
        caption_detector=caption_detector,
    script:
        "../scripts/score_teacher.py"


rule score_student:
    """A student's scores tables on the val and test splits of one generator, clean and
    under each perturbation (one model load per job)."""
    input:
        model="results/{experiment}/models/{student}",
        manifest="data/manifests/{dataset}/{generator}.parquet",
        processed="data/processed/{dataset}/{generator}",
    output:
        expand(
            "results/{{experiment}}/scores/{{student}}/{{dataset}}/{{generator}}/{view}.parquet",
            view=score_views(),
        ),
    log:
        "logs/{experiment}/score/{student}/{dataset}/{generator}.log",
    benchmark:
        "logs/benchmarks/{experiment}/score/{student}/{dataset}/{generator}.tsv"
    conda:
        "../envs/sidflow.yaml"
    threads: 1
    params:
        chains=view_chains(),
    script:
        "../scripts/score_student.py"


rule score_rine:
    """A RINE detector's scores tables from the cached tokens of one generator, clean and
    under each perturbation."""
    input:
        model="results/{experiment}/models/{rine}",
        manifest="data/manifests/{dataset}/{generator}.parquet",
        features=clip_feature_files(score_views()),
    output:
        expand(
            "results/{{experiment}}/scores/{{rine}}/{{dataset}}/{{generator}}/{view}.parquet",
            view=score_views(),
        ),
    log:
        "logs/{experiment}/score/{rine}/{dataset}/{generator}.log",
    benchmark:
        "logs/benchmarks/{experiment}/score/{rine}/{dataset}/{generator}.tsv"
    conda:
        "../envs/sidflow.yaml"
    params:
        views=score_views(),
    script:
        "../scripts/score_rine.py"


rule evaluate:
    """Metrics per detector and generator, pooled; thresholds from validation data."""
    input:
        all_scores,
    output:
        table="results/{experiment}/metrics/metrics.parquet",
        csv=report(
            "results/{experiment}/metrics/metrics.csv",
            caption="../report/metrics.rst",
            category="Metrics",
        ),
        json="results/{experiment}/metrics/metrics.json",
        comparisons="results/{experiment}/metrics/comparisons.csv",
        roc="results/{experiment}/metrics/plots/roc.csv",
        pr="results/{experiment}/metrics/plots/pr.csv",
        calibration="results/{experiment}/metrics/plots/calibration.csv",
        attribution="results/{experiment}/metrics/plots/attribution.csv",
    log:
        "logs/{experiment}/evaluate.log",
    benchmark:
        "logs/benchmarks/{experiment}/evaluate.tsv"
    conda:
        "../envs/sidflow.yaml"
    params:
        train_generators=config["experiment"]["train_generators"],
        students=config["experiment"].get("students", {}),
        run_students=PLAN.students(),
        real_pairs=PLAN.real_pairs(),
        plots_dir=subpath(output.roc, parent=True),
    script:
        "../scripts/evaluate.py"
