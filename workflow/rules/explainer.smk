rule explainer_finetune:
    """The vision-language explainer, LoRA-fine-tuned on the shipped conversations and on
    template conversations from the training split."""
    input:
        manifests=student_manifests,
        processed=student_processed,
        vqa=explainer_vqa_dir(),
    output:
        directory("results/{experiment}/models/explainer"),
    log:
        "logs/{experiment}/explainer_finetune.log",
    benchmark:
        "logs/benchmarks/{experiment}/explainer_finetune.tsv"
    conda:
        "../envs/sidflow.yaml"
    threads: 1
    params:
        settings=config["explainer"],
        seed=config["seed"],
    script:
        "../scripts/explainer_finetune.py"


rule score_explainer:
    """The explainer as a detector (p of "Fake" vs "Real" as its answer to the true/false
    question) on one generator's val and test images, clean and under each perturbation.
    """
    input:
        model="results/{experiment}/models/explainer",
        manifest="data/manifests/{dataset}/{generator}.parquet",
        processed="data/processed/{dataset}/{generator}",
    output:
        expand(
            "results/{{experiment}}/scores/explainer/{{dataset}}/{{generator}}/{view}.parquet",
            view=score_views(),
        ),
    log:
        "logs/{experiment}/score/explainer/{dataset}/{generator}.log",
    benchmark:
        "logs/benchmarks/{experiment}/score/explainer/{dataset}/{generator}.tsv"
    conda:
        "../envs/sidflow.yaml"
    threads: 1
    params:
        chains=view_chains(),
    script:
        "../scripts/score_explainer.py"


rule explain_gallery:
    """The explainer's reasons for the test images of the student's Grad-CAM gallery."""
    input:
        model="results/{experiment}/models/explainer",
        manifests=report_manifests,
        processed=report_processed,
        gradcam=explain_gallery_gradcam,
    output:
        "results/{experiment}/explainer/gallery.json",
    log:
        "logs/{experiment}/explain_gallery.log",
    conda:
        "../envs/sidflow.yaml"
    threads: 1
    params:
        per_generator=config["explainer"]["gallery"],
        seed=config["seed"],
    script:
        "../scripts/explain_gallery.py"


# the VQA benchmark needs its archive (explainer.vqa.archive); without it both steps are absent
if vqa_archive():

    rule vqa_data:
        """The explanation study's conversations, VQA questions and recorded answers: the
        archive's sha256 checked, unpacked safely."""
        input:
            vqa_archive(),
        output:
            directory("data/vqa/aigen-vqa"),
        log:
            "logs/vqa_data.log",
        conda:
            "../envs/sidflow.yaml"
        params:
            sha256=config["explainer"]["vqa"]["sha256"],
        script:
            "../scripts/vqa_data.py"

    rule vqa_eval:
        """The VQA benchmark answered before and after fine-tuning, scored overall, per
        generator and per answer type, beside the published model's recorded answers.
        """
        input:
            model="results/{experiment}/models/explainer",
            vqa="data/vqa/aigen-vqa",
        output:
            answers="results/{experiment}/explainer/vqa-answers.parquet",
            errors="results/{experiment}/explainer/vqa-errors.parquet",
        log:
            "logs/{experiment}/vqa_eval.log",
        benchmark:
            "logs/benchmarks/{experiment}/vqa_eval.tsv"
        conda:
            "../envs/sidflow.yaml"
        threads: 1
        params:
            max_new_tokens=config["explainer"]["vqa"]["max_new_tokens"],
        script:
            "../scripts/vqa_eval.py"
