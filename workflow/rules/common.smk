# Shared helpers: the plan derived from the validated config, wildcard
# constraints, and the input functions the rules use (no lambdas in rules).

import re
import sys
from pathlib import Path

from sidflow.checks import check_config
from sidflow.config import AUDIT_DETECTOR, CAPTION_DETECTOR, config_digest
from sidflow.data.folds import kfold_k
from sidflow.io import LAST_GOOD, lost_models, snapshot_models
from sidflow.data.raw_index import lock_held as raw_lock_held
from sidflow.data.raw_index import refresh_indexes as refresh_raw_indexes
from sidflow.probe.plan import cells as probe_cells
from sidflow.probe.plan import cross_backbone as probe_cross_backbone
from sidflow.probe.plan import parts as probe_parts
from sidflow.probe.plan import transforms as probe_transforms

SCHEMAS = Path(workflow.basedir, "workflow", "schemas")
# every check after the schema, the same as `sidflow validate-config` (sidflow.checks);
# it also adds the RINE grid's detectors before anything reads the detectors
PLAN = check_config(config, SCHEMAS)
EXPERIMENT = config["experiment"]["name"]
# k-fold cross-validation (splits.mode kfold): the number of folds, else 0
KFOLD = kfold_k(config["splits"])

# Edits inside a raw folder are invisible to Snakemake (directory outputs are dated by a
# marker file): refresh each downloaded generator's content index before the DAG is built
# (never while another run holds this folder's lock: the indexes are that run's).
if config["watch_raw"] and workflow.is_main_process and not raw_lock_held():
    refresh_raw_indexes(
        [
            (f"data/raw/{d}/{g}", f"data/raw-index/{d}/{g}.tsv")
            for d, g in PLAN.generators()
        ],
        ".snakemake/sidflow-raw-stat",
        config["watch_raw"],
    )
NAME = "[a-z0-9][a-z0-9._-]{0,63}"


def one_of(names):
    """A wildcard constraint matching exactly ``names`` (none: matches nothing)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


wildcard_constraints:
    dataset=NAME,
    generator=NAME,
    teacher=one_of(config.get("teachers", {})),
    teacher_key="[0-9a-f]{10}",
    backbone_key="[0-9a-f]{10}",
    experiment=NAME,
    perturbation=NAME,
    view=NAME,
    backbone=NAME,
    reduction=NAME,
    classifier=NAME,
    transform=NAME,
    # which rule trains or scores a detector follows from its kind in the plan
    student=one_of(PLAN.defined("student")),
    rine=one_of(PLAN.defined("rine")),


def key_paths(pattern, keys):
    """Expand ``pattern`` over dataset/generator keys."""
    pairs = [key.partition("/") for key in keys]
    return [pattern.format(dataset=d, generator=g) for d, _, g in pairs]


def all_targets():
    return [f"results/report/{EXPERIMENT}/index.html"]


# -- download -------------------------------------------------------------
def dataset_source(wildcards):
    return config["datasets"][wildcards.dataset]["source"]


def generator_row(wildcards):
    return PLAN.generator_row(wildcards.dataset, wildcards.generator)


# -- label ----------------------------------------------------------------
def object_class_spec(wildcards):
    return config["datasets"][wildcards.dataset].get("object_class")


# -- teachers -------------------------------------------------------------
def teacher_train_manifests(wildcards):
    return key_paths(
        "data/manifests/{dataset}/{generator}.parquet",
        PLAN.teacher_train_keys(wildcards.teacher),
    )


def teacher_train_processed(wildcards):
    return key_paths(
        "data/processed/{dataset}/{generator}",
        PLAN.teacher_train_keys(wildcards.teacher),
    )


def teacher_settings(wildcards):
    """The teacher's settings; its folder's key must be the one they determine (a folder of
    other settings is another experiment's teacher: never retrained from these)."""
    key = PLAN.teacher_key(wildcards.teacher)
    if wildcards.get("teacher_key", key) != key:
        raise ValueError(
            f"results/teachers/{wildcards.teacher}/{wildcards.teacher_key}: this config's "
            f"{wildcards.teacher} is results/teachers/{wildcards.teacher}/{key}"
        )
    return config["teachers"][wildcards.teacher]


def teacher_cache_file(wildcards):
    """The teacher's cache file of one generator (keyed like its model)."""
    return PLAN.teacher_cache(
        wildcards.teacher, f"{wildcards.dataset}/{wildcards.generator}"
    )


# -- students -------------------------------------------------------------
def student_manifests(wildcards):
    return key_paths("data/manifests/{dataset}/{generator}.parquet", PLAN.train_keys())


def student_processed(wildcards):
    return key_paths("data/processed/{dataset}/{generator}", PLAN.train_keys())


def student_cache_paths(wildcards):
    """Per teacher the student distils from: its cache files of the training generators."""
    return {
        t: [PLAN.teacher_cache(t, key) for key in PLAN.train_keys()]
        for t in PLAN.student_teachers(wildcards.student)
    }


def student_inputs(wildcards):
    return {
        "manifests": student_manifests(wildcards),
        "processed": student_processed(wildcards),
        "caches": [
            p for paths in student_cache_paths(wildcards).values() for p in paths
        ],
    }


def student_settings(wildcards):
    return config["experiment"]["students"][wildcards.student]


# a variant's own model settings (the zoo): they override the student block
STUDENT_MODEL_KEYS = ("arch", "stem", "pretrained", "attribution_drives")


def student_model(wildcards):
    """The variant's model: the student block with the variant's arch/stem/pretrained."""
    variant = student_settings(wildcards)
    return {
        **config["student"],
        **{k: variant[k] for k in STUDENT_MODEL_KEYS if k in variant},
    }


def student_training(wildcards):
    """The variant's training settings (what is not a teacher list or a model setting)."""
    skip = ("teachers", *STUDENT_MODEL_KEYS)
    return {k: v for k, v in student_settings(wildcards).items() if k not in skip}


# -- RINE -----------------------------------------------------------------
def clip_dir():
    """The frozen CLIP encoder, keyed by its settings and the seed (a tiny one is built
    from it): experiments with another CLIP never replace this one."""
    key = config_digest(
        {"backbone": config["rine"]["backbone"], "seed": config["seed"]}
    )
    return f"results/backbones/clip/{key[:10]}"


def clip_features_dir():
    """The cached CLIP tokens, keyed by the encoder and every setting that shapes them
    (views and their chains, augmentation, test crop, preprocessing)."""
    key = config_digest(
        {
            "clip": clip_dir(),
            "chains": view_chains(),
            "views": clip_aug_views(),
            "augment": config["rine"]["augment"],
            "test_crop": config["rine"]["test_crop"],
            "preprocess": config["preprocess"],
        }
    )
    return f"results/features/clip/{key[:10]}"


def clip_feature_files(views):
    """One generator's token files per view (``{dataset}``/``{generator}`` left as wildcards)."""
    d = clip_features_dir()
    return [f"{d}/{{dataset}}/{{generator}}/{view}.parquet" for view in views]


def score_views():
    """The views every trained detector is scored under: clean, then each perturbation
    (one scoring job per detector and generator writes them all)."""
    return ["none", *config["experiment"].get("perturbations", [])]


def view_chains():
    """Per score view, the perturbation chain it applies (none: clean)."""
    return {v: config["perturbations"][v] if v != "none" else [] for v in score_views()}


def clip_aug_views():
    """The augmented CLIP views of the training images (``aug1..augK``; none if K = 0 or
    when RINE trains online)."""
    if config["rine"]["online"]:
        return []
    return [v for v in PLAN.rine_views() if v != "none"]


def rine_view_features(wildcards):
    """Per cached view of the training images: its feature files, one per training generator
    (rine.online: only the clean view; the epochs draw fresh views through CLIP)."""
    views = ["none"] if config["rine"]["online"] else PLAN.rine_views()
    return {
        view: [
            f"{clip_features_dir()}/{key}/{view}.parquet" for key in PLAN.train_keys()
        ]
        for view in views
    }


def rine_online_processed(wildcards):
    """rine.online: the training images RINE's epochs augment and encode on the fly."""
    return student_processed(wildcards) if config["rine"]["online"] else []


def rine_online(wildcards):
    if not config["rine"]["online"]:
        return None
    return {
        "processed": student_processed(wildcards),
        "augment": config["rine"]["augment"],
    }


def rine_train_features(wildcards):
    return [p for paths in rine_view_features(wildcards).values() for p in paths]


def rine_val_features(wildcards):
    return [f"{clip_features_dir()}/{key}/none.parquet" for key in PLAN.train_keys()]


def rine_settings(wildcards):
    return config["experiment"]["rine"][wildcards.rine]


def rine_weights(wildcards):
    """The published weights a RINE detector starts from, if any (a rerun when they change)."""
    path = rine_settings(wildcards).get("weights")
    return [path] if path else []


# -- explainer ------------------------------------------------------------
EXPLAINER = config["explainer"]


def vqa_archive():
    """The configured VQA archive if it is on disk, else None (the VQA step is skipped)."""
    path = EXPLAINER["vqa"].get("archive")
    return path if EXPLAINER["enabled"] and path and Path(path).is_file() else None


def explainer_vqa_dir():
    """The unpacked VQA data the explainer trains on (shipped conversations), if any."""
    if vqa_archive() and "shipped" in EXPLAINER["conversations"]:
        return ["data/vqa/aigen-vqa"]
    return []


def explain_gallery_gradcam(wildcards):
    """The Grad-CAM gallery of the first student, whose images the explainer explains."""
    students = PLAN.detectors_of("student")
    if not (config["gradcam"]["enabled"] and students):
        return []
    return [f"results/{wildcards.experiment}/gradcam/{students[0]}"]


# -- evaluate / report ----------------------------------------------------
def scored_keys():
    return list(dict.fromkeys(PLAN.train_keys() + PLAN.test_keys()))


def all_scores(wildcards):
    clean = [
        f"results/{wildcards.experiment}/scores/{det}/{key}/none.parquet"
        for det in PLAN.detectors()
        for key in scored_keys()
    ]
    perturbed = [
        f"results/{wildcards.experiment}/scores/{det}/{key}/{name}.parquet"
        for det in PLAN.trained()
        for key in scored_keys()
        for name in config["experiment"].get("perturbations", [])
    ]
    return clean + perturbed


def audit_metadata(wildcards):
    return key_paths("data/metadata/{dataset}/{generator}.parquet", scored_keys())


def audit_score_paths():
    return [
        f"results/{{experiment}}/scores/{AUDIT_DETECTOR}/{key}/none.parquet"
        for key in scored_keys()
    ]


def teacher_detector(wildcards):
    return PLAN.teacher_detector(wildcards.teacher)


def caption_detector(wildcards):
    return CAPTION_DETECTOR.format(teacher=wildcards.teacher)


def gradcam_scores(wildcards):
    return [
        f"results/{wildcards.experiment}/scores/{wildcards.student}/{key}/none.parquet"
        for key in scored_keys()
    ]


def report_processed(wildcards):
    return key_paths("data/processed/{dataset}/{generator}", scored_keys())


def report_manifests(wildcards):
    return key_paths("data/manifests/{dataset}/{generator}.parquet", scored_keys())


def model_dir(experiment, detector):
    """Where a detector's model lives: teachers keyed by what determines them (shared by
    the experiments that train them alike), the others per experiment."""
    d = PLAN.detector(detector)
    if d.kind.trained_in_experiment:
        return f"results/{experiment}/models/{d.name}"
    return PLAN.teacher_dir(d.source)


def report_models(wildcards):
    """The model folders the report describes: every teacher, student and RINE detector."""
    return {
        d: model_dir(wildcards.experiment, d)
        for d in PLAN.detectors_of("teacher", "student", "rine")
    }


def report_model_cards(wildcards):
    return {
        d: f"{path}/{PLAN.detector_kind(d).model_card}"
        for d, path in report_models(wildcards).items()
    }


def report_processed_dirs(wildcards):
    return dict(zip(scored_keys(), report_processed(wildcards), strict=True))


def report_manifest_summaries(wildcards):
    keys = scored_keys()
    return dict(
        zip(
            keys,
            key_paths("data/manifests/{dataset}/{generator}.summary.json", keys),
            strict=True,
        )
    )


def report_gradcam(wildcards):
    if not config["gradcam"]["enabled"]:
        return {}
    return {
        s: f"results/{wildcards.experiment}/gradcam/{s}"
        for s in PLAN.detectors_of("student")
    }


def report_inputs(wildcards):
    """The files the report reads, by name (the sections' real inputs)."""
    exp = f"results/{wildcards.experiment}"
    inputs = {
        "metrics": f"{exp}/metrics/metrics.parquet",
        "comparisons": f"{exp}/metrics/comparisons.csv",
        **{
            c: f"{exp}/metrics/plots/{c}.csv"
            for c in ("roc", "pr", "calibration", "attribution")
        },
        "processed": list(report_processed_dirs(wildcards).values()),
        "manifest_summaries": list(report_manifest_summaries(wildcards).values()),
        "models": list(report_models(wildcards).values()),
        "gradcam": list(report_gradcam(wildcards).values()),
    }
    if config["experiment"]["shortcut_audit"]:
        inputs["audit"] = f"{exp}/audit/shortcut.json"
    if EXPLAINER["enabled"]:
        inputs["explainer"] = f"{exp}/models/explainer"
        inputs["explanations"] = f"{exp}/explainer/gallery.json"
        if vqa_archive():
            inputs["vqa_errors"] = f"{exp}/explainer/vqa-errors.parquet"
    if PROBE["enabled"]:
        inputs["probe_ranking"] = f"{exp}/probe/ranking.csv"
        inputs["probe_cross"] = f"{exp}/probe/cross.csv"
        inputs["probe_cross_best"] = f"{exp}/probe/cross-best.csv"
        # the cells' metrics: a probe cell may be the best detector of the summary
        inputs["probe_metrics"] = f"{exp}/probe/metrics.parquet"
    return inputs


def report_detector_kinds(wildcards):
    return {name: kind.name for name, kind in PLAN.detector_kinds().items()}


def report_dataset_notes(wildcards):
    return {d: config["datasets"][d].get("note", "") for d in config["use_datasets"]}


def report_config_digest(wildcards):
    """The report renders the whole validated config (provenance): rerun when it changes."""
    return config_digest(config)


# -- probe grid (frozen backbones + classical classifiers) -----------------
PROBE = config["probe"]


def probe_spec(backbone):
    """A cached probe backbone's settings, with the model folder of a teacher or student."""
    spec = dict(PROBE["backbones"][backbone])
    if spec["arch"] == "teacher":
        spec["model_dir"] = PLAN.teacher_dir(spec["teacher"])
        spec["image_size"] = config["preprocess"]["image_size"]
    elif spec["arch"] == "student":
        spec["model_dir"] = f"results/{EXPERIMENT}/models/{spec['student']}"
    return spec


def probe_backbone_key(backbone):
    """Ten hex digits of what determines a backbone's features (its settings and model
    folder): the feature files of a teacher or student backbone are never another
    experiment's, those of a fixed backbone are shared."""
    return config_digest(probe_spec(backbone))[:10]


def probe_backbone_spec(wildcards):
    if wildcards.backbone_key != probe_backbone_key(wildcards.backbone):
        raise ValueError(
            f"probe backbone {wildcards.backbone} key {wildcards.backbone_key}: this config's "
            f"is {probe_backbone_key(wildcards.backbone)}"
        )
    return probe_spec(wildcards.backbone)


def probe_chain(wildcards):
    return PROBE["transforms"].get(wildcards.transform, [])


def probe_feature_inputs(wildcards):
    paths = {
        "manifest": f"data/manifests/{wildcards.dataset}/{wildcards.generator}.parquet",
        "processed": f"data/processed/{wildcards.dataset}/{wildcards.generator}",
    }
    spec = probe_backbone_spec(wildcards)
    if spec["arch"] in ("teacher", "student"):
        paths["model"] = spec["model_dir"]
    if spec["arch"] == "teacher" and wildcards.transform == "none":
        paths["teacher_cache"] = PLAN.teacher_cache(
            spec["teacher"], f"{wildcards.dataset}/{wildcards.generator}"
        )
    return paths


def probe_feature_paths(backbone, transform):
    """Per part of ``backbone``: its feature files, one per scored generator."""
    return [
        key_paths(
            f"results/features/probe/{part}/{probe_backbone_key(part)}/{transform}/{{dataset}}/{{generator}}.parquet",
            scored_keys(),
        )
        for part in probe_parts(PROBE, backbone)
    ]


def probe_cell_features(wildcards):
    ts = dict.fromkeys([*probe_transforms(PROBE), wildcards.transform])
    return {t: probe_feature_paths(wildcards.backbone, t) for t in ts}


def probe_cell_inputs(wildcards):
    feats = probe_cell_features(wildcards)
    return [p for parts in feats.values() for paths in parts for p in paths]


def probe_reduction_spec(wildcards):
    return PROBE["reductions"][wildcards.reduction]


def probe_cell_cards(wildcards):
    return [
        f"results/{wildcards.experiment}/probe/cells/{b}/{r}/{c}/{t}/cell.json"
        for b, r, c, t in probe_cells(PROBE)
    ]


def probe_cross_parts(wildcards):
    return probe_feature_paths(probe_cross_backbone(PROBE), "none")


def probe_cross_inputs(wildcards):
    return [p for paths in probe_cross_parts(wildcards) for p in paths]


def probe_cross_best_features(wildcards):
    """Per grid backbone and grid transform (and none): its feature files per part."""
    return {
        b: {t: probe_feature_paths(b, t) for t in probe_transforms(PROBE)}
        for b in dict.fromkeys(PROBE["grid"]["backbones"])
    }


def probe_cross_best_inputs(wildcards):
    feats = probe_cross_best_features(wildcards)
    return [
        p
        for by_t in feats.values()
        for parts in by_t.values()
        for paths in parts
        for p in paths
    ]


def probe_cross_reduction(wildcards):
    return PROBE["reductions"][PROBE["cross"]["reduction"]]
