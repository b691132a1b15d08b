# A failed retrain never loses the last good model: Snakemake deletes a job's outputs before
# it reruns the job, so each run first keeps hard-linked copies of the experiment's finished
# models in results/<experiment>/.last-good/ (sidflow.io.snapshot_models; outside models/, which
# DVC tracks). After a failure the log names the models whose copy is the last good one; the
# next run retrains them.


onstart:
    snapshot_models(f"results/{EXPERIMENT}/models", f"results/{EXPERIMENT}/{LAST_GOOD}")


onerror:
    for name in lost_models(
        f"results/{EXPERIMENT}/models", f"results/{EXPERIMENT}/{LAST_GOOD}"
    ):
        print(
            f"sidflow: the retrain of {name} failed; its last good model is kept in "
            f"results/{EXPERIMENT}/{LAST_GOOD}/{name} (the next run retrains it)",
            file=sys.stderr,
        )
