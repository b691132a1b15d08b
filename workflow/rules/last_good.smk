# A failed retrain never loses the last good model: Snakemake deletes a job's outputs before
# it reruns the job, so each run first keeps hard-linked copies of the experiment's finished
# models in results/<experiment>/models/.last-good/ (sidflow.io.snapshot_models). After a
# failure the log names the models whose copy is the last good one; the next run retrains them.


onstart:
    snapshot_models(f"results/{EXPERIMENT}/models")


onerror:
    for name in lost_models(f"results/{EXPERIMENT}/models"):
        print(
            f"sidflow: the retrain of {name} failed; its last good model is kept in "
            f"results/{EXPERIMENT}/models/{LAST_GOOD}/{name} (the next run retrains it)",
            file=sys.stderr,
        )
