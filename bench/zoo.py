"""Student architecture zoo: size, FLOPs and CPU speed of every ``STUDENTS`` name.

    .venv/bin/python bench/zoo.py                                    # all archs, 32 + 224 px
    .venv/bin/python bench/zoo.py --sizes 32 --archs resnet18 npr --seconds 3
    .venv/bin/python bench/zoo.py --out results/bench/zoo.json       # the default output

For each architecture and image size (2-class head, random weights; the ResNets use the
``cifar-maxpool`` stem at 32 px and the ``imagenet`` stem at >= 64 px):

* ``parameters`` and ``gflops_per_image`` (``torch.utils.flop_counter.FlopCounterMode`` on CPU
  at batch 1, 1 multiply-add = 2 FLOPs; matmuls/convolutions only, element-wise ops uncounted);
* inference images/s (eval, ``no_grad``; batch 64 at 32 px, 16 at 224 px);
* training images/s (forward + cross-entropy + backward + AdamW step; batch 64 at 32 px,
  8 at 224 px). Training at >= 64 px is skipped (``skipped``) for nets whose warm-up step
  takes longer than ``--max-step-s`` (20 s).

``torch.set_num_threads(--threads)`` (2). Each measurement runs ``--seconds`` (4) after one
warm-up call and records ``os.getloadavg()`` before/after, ``contended`` (1-min load > 1.5 at
its start) and ``other_cpu_cores`` (``bench/student.py``'s ``Machine``). Writes JSON
atomically to ``--out`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from student import machine, timed  # noqa: E402

BATCH = {"infer": {32: 64, 224: 16}, "train": {32: 64, 224: 8}}


def batch_for(kind: str, size: int) -> int:
    table = BATCH[kind]
    return table.get(size, table[32] if size < 128 else table[224])


def build(arch: str, size: int) -> torch.nn.Module:
    from sidflow.models.student import StudentConfig, create_student

    stem = "cifar-maxpool" if size < 64 else "imagenet"
    return create_student(arch, StudentConfig(arch=arch, image_size=size, stem=stem))


def count(model: torch.nn.Module, size: int) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.randn(1, 3, size, size))
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "feature_dim": int(getattr(model, "feature_dim", 0)),
        "gflops_per_image": round(counter.get_total_flops() / 1e9, 4),
    }


def infer_row(model: torch.nn.Module, size: int, seconds: float) -> dict:
    batch = batch_for("infer", size)
    x = torch.randn(batch, 3, size, size)
    model.eval()

    def step() -> None:
        with torch.no_grad():
            model(x)["logits"].sum().item()

    return {"batch": batch} | timed(step, batch, min_s=seconds)


def train_row(model: torch.nn.Module, size: int, seconds: float, max_step_s: float) -> dict:
    batch = batch_for("train", size)
    x = torch.randn(batch, 3, size, size)
    y = torch.randint(0, 2, (batch,))
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x)["logits"], y)
        loss.backward()
        opt.step()

    t = time.perf_counter()
    step()  # the warm-up call; also decides whether a large-size run is affordable
    first = time.perf_counter() - t
    if size >= 64 and first > max_step_s:
        return {"batch": batch, "skipped": f"warm-up step {first:.1f} s > {max_step_s:.0f} s"}
    return {"batch": batch, "first_step_s": round(first, 2)} | timed(
        step, batch, min_s=seconds, warmup=0
    )


def bench(arch: str, size: int, args) -> dict:
    torch.manual_seed(0)
    model = build(arch, size)
    row = {"arch": arch, "image_size": size} | count(model, size)
    row["stem"] = getattr(model.cfg, "stem", None) if arch in ("resnet18", "resnet50") else None
    if not args.no_infer:
        row["infer"] = infer_row(model, size, args.seconds)
    if not args.no_train:
        row["train"] = train_row(model, size, args.seconds, args.max_step_s)
    return row


def write_atomic(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o644)
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def fmt_rate(r: dict | None) -> str:
    if not r:
        return "-"
    if "skipped" in r:
        return "skipped"
    return f"{r['images_per_s']:,.1f}" + (" *" if r.get("contended") else "")


def table(rows: list[dict]) -> str:
    sizes = sorted({r["image_size"] for r in rows})
    head = "| arch | params (M) | " + " | ".join(
        f"GFLOPs {s} | infer {s} img/s | train {s} img/s" for s in sizes
    )
    lines = [head + " |", "|" + "---|" * (2 + 3 * len(sizes))]
    for arch in dict.fromkeys(r["arch"] for r in rows):
        by = {r["image_size"]: r for r in rows if r["arch"] == arch}
        params = " / ".join(dict.fromkeys(f"{by[s]['parameters'] / 1e6:.3g}" for s in sorted(by)))
        cells = []
        for s in sizes:
            r = by.get(s)
            if r is None:
                cells += ["-"] * 3
                continue
            g = r["gflops_per_image"]
            cells += [f"{g:.3g}" if g < 10 else f"{g:.1f}", fmt_rate(r.get("infer"))]
            cells.append(fmt_rate(r.get("train")))
        lines.append(f"| {arch} | {params} | " + " | ".join(cells) + " |")
    note = "params: one value, or one per size where the net depends on it (stem, spectrum size²)."
    return "\n".join(lines) + f"\n\n`*`: contended (1-min load > 1.5 at its start). {note}"


def main() -> None:
    from sidflow.registry import STUDENTS

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    p.add_argument("--archs", nargs="+", default=None, help="default: every STUDENTS name")
    p.add_argument("--out", type=Path, default=Path("results/bench/zoo.json"))
    p.add_argument("--seconds", type=float, default=4.0, help="timed seconds per measurement")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-step-s", type=float, default=20.0)
    p.add_argument("--no-infer", action="store_true")
    p.add_argument("--no-train", action="store_true")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    import sidflow.models.zoo  # noqa: F401  (registers the zoo's names)

    archs = args.archs or list(STUDENTS.names())
    rows, t0 = [], time.perf_counter()
    for size in args.sizes:
        for arch in archs:
            row = bench(arch, size, args)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    out = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine() | {"threads": torch.get_num_threads()},
        "seconds_per_measurement": args.seconds,
        "total_s": round(time.perf_counter() - t0, 1),
        "contended_any": any(
            r.get(k, {}).get("contended", False) for r in rows for k in ("infer", "train")
        ),
        "rows": rows,
    }
    write_atomic(args.out, out)
    print(table(rows))
    print(f"\nwrote {args.out} ({out['total_s']} s)")


if __name__ == "__main__":
    main()
