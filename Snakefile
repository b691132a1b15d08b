# sidflow: synthetic image detection as a DAG. This file is a table of contents;
# each step lives in workflow/rules/<step>.smk and its logic in src/sidflow/.
#
#   snakemake --profile profiles/local                       # the embedded demo
#   snakemake --profile profiles/local --configfile experiments/cifake.yaml
#   snakemake --profile profiles/slurm                        # on a SLURM cluster


from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config.yaml"


validate(config, "workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/label.smk"
include: "workflow/rules/audit.smk"
include: "workflow/rules/teacher_finetune.smk"
include: "workflow/rules/teacher_cache.smk"
include: "workflow/rules/student_distill.smk"
include: "workflow/rules/clip_features.smk"
include: "workflow/rules/rine_train.smk"
include: "workflow/rules/explainer.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/probe.smk"
include: "workflow/rules/gradcam.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/last_good.smk"


rule all:
    default_target: True
    input:
        all_targets(),
