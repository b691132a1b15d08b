"""CIFAKE student recipe ablation: the same short schedule on a class-balanced subset, one
training setting changed per variant; validation AP/accuracy and test AP/accuracy (threshold
from validation) per variant, as JSON.

    snakemake --profile profiles/local data/manifests/cifake/real.parquet \
        data/manifests/cifake/sd14.parquet --configfile experiments/cifake.yaml   # data only
    python bench/cifake_recipe.py                                # ~12 min on 2 cores
    python bench/cifake_recipe.py --train-images 20000 --epochs 3 --variants base ema

Variants (no KD: the recipe, not the teachers): ``base`` (the main run's student settings:
flips, AdamW, warm-up + cosine, bf16 where the CPU has it), ``translate`` (+ random shifts of
up to ``--translate`` pixels), ``ema`` (+ a weight average, ``--ema`` decay per step: 0.99 suits
the default 126 steps, 0.998 the main run's 2,400), ``translate_ema`` (both),
``cifar_stem`` (the full-resolution stem instead of ``cifar-maxpool``). Each variant trains
in this process from the same seed; the subset is drawn once (``--seed``). Writes
``results/bench/cifake-recipe.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ("base", "translate", "ema", "translate_ema", "cifar_stem")


def variant(name: str, translate: int, ema: float) -> dict:
    """The settings a variant changes."""
    return {"base": {}, "translate": {"translate": translate}, "ema": {"ema": ema},
            "translate_ema": {"translate": translate, "ema": ema}, "cifar_stem": {"stem": "cifar"}}[name]  # fmt: skip


def subset(man: pd.DataFrame, split: str, n: int, seed: int) -> pd.DataFrame:
    """``n`` images of ``split`` drawn without replacement (all when fewer)."""
    rows = man[man["split"] == split]
    return rows.sample(n=min(n, len(rows)), random_state=seed) if n else rows


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", default="data", help="the pipeline's data folder")
    ap.add_argument("--generators", nargs="+", default=["real", "sd14"])
    ap.add_argument("--train-images", type=int, default=16000, help="per generator: /2")
    ap.add_argument("--val-images", type=int, default=4000)
    ap.add_argument("--test-images", type=int, default=8000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--lr", type=float, default=0.003)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS[:4]), choices=VARIANTS)
    ap.add_argument("--translate", type=int, default=2, help="pixels, for the translate variants")
    ap.add_argument(
        "--ema",
        type=float,
        default=0.99,
        help="decay per step for the ema variants (scale with the schedule's steps)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "results/bench/cifake-recipe.json"))
    args = ap.parse_args()

    from sklearn.metrics import average_precision_score

    from sidflow.data.loading import ImageBank, load_images
    from sidflow.models.student import StudentConfig, load_student, predict
    from sidflow.train.distill import DistillConfig, train_student

    data = Path(args.data)
    gens = args.generators
    mans = [pd.read_parquet(data / f"manifests/cifake/{g}.parquet") for g in gens]
    procs = [str(data / f"processed/cifake/{g}") for g in gens]
    per = len(gens)
    picked = [
        pd.concat(
            [
                subset(m, "train", args.train_images // per, args.seed),
                subset(m, "val", args.val_images // per, args.seed),
            ]
        )
        for m in mans
    ]
    test = load_images([subset(m, "test", args.test_images // per, args.seed) for m in mans], procs)
    results = {"settings": vars(args), "variants": {}}
    for name in args.variants:
        over = variant(name, args.translate, args.ema)
        stem = over.pop("stem", "cifar-maxpool")
        cfg = DistillConfig(alpha=0.0, epochs=args.epochs, batch_size=args.batch_size,
                            lr=args.lr, seed=args.seed, **over)  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.time()
            meta = train_student(StudentConfig(image_size=32, stem=stem), cfg, picked, procs, {},
                                 Path(tmp) / "student")  # fmt: skip
            seconds = time.time() - t0
            model, meta = load_student(Path(tmp) / "student")
        bank = ImageBank(test["jpeg"], meta["student"]["image_mean"], meta["student"]["image_std"])
        p = predict(model, bank, 512, "cpu")["p_fake"]
        y = test["label"].to_numpy()
        thr = meta["threshold"]
        results["variants"][name] = {
            "settings": over | {"stem": stem},
            "seconds": round(seconds, 1),
            "val_ap_per_epoch": [round(h["val_ap"], 5) for h in meta["history"]],
            "best_epoch": meta["best_epoch"],
            "val_ap": round(float(meta["val_ap"]), 5),
            "threshold_from_val": round(thr, 4),  # the student card's (validation split)
            "test_images": len(y),
            "test_ap": round(float(average_precision_score(y, p)), 5),
            "test_accuracy": round(float(((p >= thr).astype(int) == y).mean()), 5),
        }
        print(name, json.dumps(results["variants"][name]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
