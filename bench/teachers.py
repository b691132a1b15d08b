"""Real-size teachers vs the student: inference images/s, random weights, no download.

    python bench/student.py --real-teachers           # writes results/bench/student-real-teachers.json
    python bench/teachers.py --out results/bench/teachers.json   # the same, standalone
    python bench/teachers.py --models vitgpt2 --batches 1 32     # one teacher

The teachers are the real architectures built from the package's configurations
(``src/sidflow/models/configs/*.json``) by ``bench/real_size_smoke.py``'s ``build``
(random weights, stand-in tokenizer, wrapped in sidflow's ``VitGpt2Teacher`` /
``Blip2Teacher``): ViT-GPT2 (ViT-B/16 + GPT-2 with cross-attention; fp32, the teacher
default, and bf16) and BLIP-2 OPT-2.7B (bf16; skipped with a message when less than
``--min-free-gib`` is available). The timed pass is what the cache step runs per image:
``teacher.encode`` + ``teacher.caption_logprob`` of both class captions (teacher-forced,
``--caption-tokens`` tokens each including the end token; the greedy caption that
``score`` also writes is left out). The student is timed at the same batches: the CIFAKE
student (ResNet18 ``cifar-maxpool`` stem, 32 px; fp32 and bf16 autocast) and
torchvision's ResNet18 at 224 px, fp32 (and at batch 8 when BLIP-2 runs). Teachers at
224 px, batch 1 and 32; BLIP-2 at batch 1 and 8 when batch 32 would take more than
``--blip2-budget`` seconds (said in the output and the JSON ``note``). Each measurement: one warm-up
call, then at least 2 calls and ``--seconds``; load averages as in bench/student.py.
Denormals are flushed (``torch.set_flush_denormal``): the ViT-g tower's published
initializer range is 1e-10, and random near-zero weights must not time denormal arithmetic.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import real_size_smoke as rs  # noqa: E402
from student import machine, quiet, timed  # noqa: E402

GIB = 2**30


def caption_pass(teacher, x: torch.Tensor) -> list[torch.Tensor]:
    """The cache step's teacher-forced part: one encode, both class captions' log-likelihood."""
    with torch.no_grad():
        enc = teacher.encode(x)
        return [teacher.caption_logprob(enc, c) for c in teacher.class_names]


def set_caption_tokens(teacher, n: int) -> None:
    """Class captions of ``n`` tokens (n - 1 words + the end token; the compute does not
    depend on which words)."""
    teacher.cfg.captions = {c: " ".join([c] * (n - 1)) for c in teacher.class_names}
    assert all(len(teacher.caption_ids(c)) == n for c in teacher.class_names)


def measure(fn, batch: int, dtype: torch.dtype, args) -> dict:
    x = torch.randn(batch, 3, 224, 224).to(dtype)
    run = lambda: timed(lambda: fn(x), batch, min_s=args.seconds, min_iters=2)  # noqa: E731
    return quiet(run, args.retries, args.quiet_wait)


def log(name: str, batch: int, row: dict) -> None:
    print(f"[teachers] {name} batch {batch}: {row['images_per_s']} img/s "
          f"({row['iterations']} calls, {row['seconds']} s, load {row['load_before'][0]}"
          f"->{row['load_after'][0]}, others {row['other_cpu_cores']} cores)", flush=True)  # fmt: skip


def students(batches: list[int], args) -> dict:
    from torchvision.models import resnet18

    from sidflow.devices import autocast_to
    from sidflow.models.student import StudentConfig, create_student

    cifake = create_student("resnet18", StudentConfig(image_size=32))
    nets = {"student_cifake_32px_fp32": (cifake, 32, None),
            "student_cifake_32px_bf16": (cifake, 32, torch.bfloat16),  # autocast, as predict
            "resnet18_224px_fp32": (resnet18(), 224, None)}  # fmt: skip
    out = {}
    for name, (net, size, dtype) in nets.items():
        net.eval()
        for b in batches:
            x = torch.randn(b, 3, size, size)

            def run(net=net, x=x, dtype=dtype) -> dict:
                with torch.no_grad(), autocast_to(torch.device("cpu"), dtype):
                    return timed(lambda: net(x), x.shape[0], min_s=args.seconds, min_iters=2)

            row = quiet(run, args.retries, args.quiet_wait)
            out.setdefault(name, {})[f"batch{b}"] = row
            log(name, b, row)
    return out


def teacher(name: str, dtypes, batches: list[int], args) -> dict:
    import psutil

    params = rs.count(rs.meta_model(name))
    avail = psutil.virtual_memory().available / GIB
    need = max(args.min_free_gib if name == "blip2" else 0, params * 2 * 1.5 / GIB)
    if avail < need:
        msg = (
            f"SKIPPED: {avail:.1f} GiB available, needs {need:.1f} GiB ({params / 1e9:.2f}B params)"
        )
        print(f"[teachers] {name} {msg}", flush=True)
        return {name: {"skipped": msg, "parameters": params}}
    t = time.perf_counter()
    tch = rs.build(name)  # bf16 weights
    set_caption_tokens(tch, args.caption_tokens)
    info = {"parameters": params, "build_s": round(time.perf_counter() - t, 1),
            "available_gib_before_build": round(avail, 1), "caption_tokens": args.caption_tokens}  # fmt: skip
    out = {}
    for dtype in dtypes:
        tch.model.to(dtype)
        key = f"{name}_{'bf16' if dtype == torch.bfloat16 else 'fp32'}"
        out[key] = dict(info)
        for b in batches:
            if name == "blip2" and b > 8 and "batch1" in out[key]:
                est = 3 * b / out[key]["batch1"]["images_per_s"]  # warm-up + 2 calls
                if est > args.blip2_budget:
                    out[key]["note"] = (f"batch {b} not run: ~{est:.0f} s > --blip2-budget "
                                              f"{args.blip2_budget:.0f} s; batch 8 instead")  # fmt: skip
                    print(f"[teachers] {key}: {out[key]['note']}", flush=True)
                    b = 8
            row = measure(lambda x: caption_pass(tch, x), b, dtype, args)  # noqa: B023
            out[key][f"batch{b}"] = row
            log(key, b, row)
    tch = None  # free the weights before the next teacher
    gc.collect()
    return out


def ratios(stu: dict, tea: dict) -> dict:
    out = {}
    for tname, rows in tea.items():
        for bkey, row in rows.items():
            if not (bkey.startswith("batch") and "images_per_s" in row):
                continue
            out.setdefault(bkey, {})[tname] = {
                f"{sname}_over_teacher": round(srows[bkey]["images_per_s"] / row["images_per_s"], 1)
                for sname, srows in stu.items() if bkey in srows}  # fmt: skip
    return out


def real_teachers(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["vitgpt2", "blip2"])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--seconds", type=float, default=10.0, help="per measurement (min 2 calls)")
    ap.add_argument("--caption-tokens", type=int, default=8)
    ap.add_argument("--blip2-budget", type=float, default=300.0)
    ap.add_argument("--min-free-gib", type=float, default=12.0)
    ap.add_argument("--retries", type=int, default=2, help="re-measure when others ran")
    ap.add_argument("--quiet-wait", type=float, default=90.0, help="max s to wait for quiet")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_flush_denormal(True)
    dtypes = {"vitgpt2": [torch.float32, torch.bfloat16], "blip2": [torch.bfloat16]}
    res = {"machine": machine(), "image_size": 224, "threads": torch.get_num_threads()}
    res["students"] = students(sorted({*args.batches, 8} if "blip2" in args.models else set(args.batches)), args)  # fmt: skip
    res["teachers"] = {}
    for name in args.models:
        res["teachers"] |= teacher(name, dtypes[name], args.batches, args)
    res["student_over_teacher"] = ratios(res["students"], {k: v for k, v in res["teachers"].items() if "skipped" not in v})  # fmt: skip
    print(json.dumps(res["student_over_teacher"], indent=1), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    real_teachers()
