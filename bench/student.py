"""Student vs teachers: inference and training speed on this machine, real checkpoint sizes.

    python bench/student.py                  # tiny teachers + real sizes, CPU, ~2-4 minutes
    python bench/student.py --device cuda --out results/bench/student-gpu.json
    python bench/student.py --real-teachers  # real-size teachers, ~10 min quiet
    python bench/student.py --train          # training variants, ~8 min quiet

Default (no mode flag, or ``--tiny``):

1. Images/s of the student (ResNet18; ImageNet stem at 224 px, the CIFAR stem at 32 px)
   and of each teacher's scoring pass (teacher-forced caption likelihoods + embedding,
   what the cache step runs) at batch 1 and 64, same settings, and the student/teacher
   speed ratio. Teachers here are the tiny configs the demo trains (same classes as the
   real ones); their real sizes are in part 2.
2. Parameter counts and FLOPs per image for the real checkpoints' configurations
   (ResNet18, ViT-GPT2 = ViT-B/16 + GPT-2, BLIP-2 OPT-2.7B), built on the ``meta``
   device (no weights, no memory, no download) and counted with
   ``torch.utils.flop_counter`` (1 multiply-add = 2 FLOPs).

``--real-teachers`` (code in ``bench/teachers.py``, also runnable alone): images/s of the
real-size teachers (random weights, 224 px) vs the student.
``--train``: training images/s of the CIFAKE student (ResNet18 ``cifar-maxpool``, 32 px,
AdamW, cross-entropy on random labels, the model step only) for fp32 1/2 threads,
channels_last, bf16 autocast, batch 512, ``torch.compile``; each variant ~15 s after
warm-up in its own process (cold inductor cache); plus a bf16-vs-fp32 step check.

Each measurement records ``os.getloadavg()`` before/after, ``contended`` (1-min load > 1.5
at its start) and ``other_cpu_cores`` (other processes' CPU during it, /proc/stat); it
first waits (``--quiet-wait``) for a quiet machine and is redone (``--retries``) if others
used > 0.25 cores. Prints JSON and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


class Machine:
    """Load averages and other processes' CPU use around one measurement."""

    @staticmethod
    def busy_s() -> float:  # every CPU's non-idle seconds since boot
        v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def own_s() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        c = resource.getrusage(resource.RUSAGE_CHILDREN)
        return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime

    @classmethod
    def wait_quiet(cls, limit: float = 60.0, load: float = 1.5, others: float = 0.25) -> float:
        """Wait (at most ``limit`` s) until the 1-min load is at most ``load`` (the previous
        measurement's own load decays) and other processes use under ``others`` cores."""
        t = time.perf_counter()
        while time.perf_counter() - t < limit:
            b0, o0 = cls.busy_s(), cls.own_s()
            time.sleep(2)
            if (cls.busy_s() - b0 - cls.own_s() + o0) / 2 < others and os.getloadavg()[0] <= load:
                break
        return round(time.perf_counter() - t, 1)

    def __enter__(self):
        self.load0 = os.getloadavg()
        self.busy0, self.own0, self.t0 = self.busy_s(), self.own_s(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        dt = time.perf_counter() - self.t0
        other = (self.busy_s() - self.busy0 - (self.own_s() - self.own0)) / max(dt, 1e-9)
        self.info = {"load_before": [round(v, 2) for v in self.load0],
                     "load_after": [round(v, 2) for v in os.getloadavg()],
                     "contended": self.load0[0] > 1.5, "other_cpu_cores": round(max(other, 0), 2)}  # fmt: skip


def timed(step, images: int, min_s: float = 10.0, min_iters: int = 2, warmup: int = 1) -> dict:
    """Images/s of ``step()`` (``images`` per call) after ``warmup`` calls: the mean over
    the run, and from the median and the fastest call (least disturbed by other work)."""
    for _ in range(warmup):
        step()
    calls = []
    with Machine() as m:
        t0 = time.perf_counter()
        while len(calls) < min_iters or time.perf_counter() - t0 < min_s:
            t = time.perf_counter()
            step()
            calls.append(time.perf_counter() - t)
        dt = time.perf_counter() - t0
    calls.sort()
    return {"images_per_s": round(images * len(calls) / dt, 2),
            "images_per_s_median": round(images / calls[len(calls) // 2], 2),
            "images_per_s_best": round(images / calls[0], 2),
            "iterations": len(calls), "seconds": round(dt, 1)} | m.info  # fmt: skip


def quiet(measure, retries: int = 2, wait: float = 90.0, others: float = 0.25) -> dict:
    """``measure()`` (a :func:`timed` row) after waiting for a quiet machine, repeated up to
    ``retries`` times while other processes used more than ``others`` cores during it;
    returns the least disturbed attempt."""
    rows = []
    for _ in range(retries + 1):
        waited = Machine.wait_quiet(wait)
        rows.append(measure() | {"waited_for_quiet_s": waited})
        if rows[-1].get("other_cpu_cores", 0) <= others:
            break
    return min(rows, key=lambda r: r.get("other_cpu_cores", 0)) | {"attempts": len(rows)}


def machine() -> dict:
    info = Path("/proc/cpuinfo").read_text()
    model = next((ln.split(":", 1)[1].strip() for ln in info.splitlines()
                  if ln.startswith("model name")), "?")  # fmt: skip
    flags = set(next((ln.split(":", 1)[1].split() for ln in info.splitlines()
                      if ln.startswith("flags")), []))  # fmt: skip
    want = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    return {"cpu": model, "cpus": os.cpu_count(), "flags": {f: f in flags for f in want},
            "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads_default": torch.get_num_threads()}  # fmt: skip


def images_per_s(
    fn, batch: int, size: int, device, min_seconds: float = 2.0, max_iters: int = 50
) -> float:
    x = torch.randn(batch, 3, size, size, device=device)
    fn(x)  # warm-up
    n, t0 = 0, time.perf_counter()
    while n < max_iters and (time.perf_counter() - t0 < min_seconds or n < 2):
        fn(x)
        n += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * n / (time.perf_counter() - t0)


def speed(args, device) -> dict:
    from sidflow.models.student import StudentConfig, create_student
    from sidflow.models.teachers import TeacherConfig, create_teacher

    settings = {
        "vitgpt2": {"hidden_size": 96, "layers": 2, "heads": 4, "patch_size": 8},
        "blip2": {"hidden_size": 96, "layers": 2, "heads": 4, "patch_size": 8, "query_tokens": 8},
    }
    out = {}
    for size, stem in ((224, "imagenet"), (32, "cifar-maxpool")):
        student = (
            create_student("resnet18", StudentConfig(image_size=size, stem=stem)).to(device).eval()
        )
        teachers = {name: create_teacher(name, TeacherConfig(arch=name, image_size=size, tiny=tiny))
                    for name, tiny in settings.items()}  # fmt: skip
        for t in teachers.values():
            t.model.to(device)
        for batch in args.batches:
            with torch.no_grad(), Machine() as m:
                s = images_per_s(lambda x: student(x), batch, size, device)  # noqa: B023
                row = {"student_resnet18": round(s, 1)}
                for name, t in teachers.items():
                    tps = images_per_s(lambda x: t.score(x), batch, size, device)  # noqa: B023
                    row[f"teacher_{name}_tiny"] = round(tps, 1)
                    row[f"student_over_{name}"] = round(s / tps, 2)
            out[f"{size}px_batch{batch}"] = row | {"machine": m.info}
            print(f"{size}px batch {batch}: {row}", flush=True)
    return out


def count(model_fn, inputs_fn) -> dict:
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import masking_utils

    # the mask shortcut "is the padding mask all ones?" reads tensor values, which meta
    # tensors do not have; skipping it only means the full mask is built (same FLOPs)
    masking_utils._ignore_bidirectional_mask_sdpa = lambda *a, **k: False

    with torch.device("meta"):
        model = model_fn().eval().requires_grad_(False)
        params = sum(p.numel() for p in model.parameters())
        inputs = inputs_fn()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(**inputs) if inputs else None
    return {
        "parameters": int(params),
        "gflops_per_image": round(counter.get_total_flops() / 1e9, 2),
    }


def real_sizes() -> dict:
    from torchvision.models import resnet18
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        GPT2Config,
        OPTConfig,
        VisionEncoderDecoderConfig,  # fmt: skip
        VisionEncoderDecoderModel,
        ViTConfig,
    )

    caption = 4  # tokens of a short caption ("a fake image"), teacher-forced
    out = {"resnet18_224": count(lambda: resnet18(), lambda: {"x": torch.randn(1, 3, 224, 224)})}

    def vitgpt2():
        cfg = VisionEncoderDecoderConfig.from_encoder_decoder_configs(
            ViTConfig(image_size=224, patch_size=16), GPT2Config(add_cross_attention=True))  # fmt: skip
        cfg._attn_implementation = "eager"  # sdpa's mask shortcut reads values (impossible on meta)
        return VisionEncoderDecoderModel(cfg)

    out["vit_gpt2_224"] = count(vitgpt2, lambda: {"pixel_values": torch.randn(1, 3, 224, 224),
                                                  "decoder_input_ids": torch.zeros(1, caption, dtype=torch.long)})  # fmt: skip

    def blip2():
        text = OPTConfig(hidden_size=2560, num_hidden_layers=32, ffn_dim=10240, num_attention_heads=32,
                         word_embed_proj_dim=2560, vocab_size=50272)  # fmt: skip
        cfg = Blip2Config(text_config=text.to_dict(), num_query_tokens=32)
        cfg._attn_implementation = "eager"
        for sub in (cfg.vision_config, cfg.qformer_config, cfg.text_config):
            sub._attn_implementation = "eager"
        return Blip2ForConditionalGeneration(cfg)

    # BLIP-2's forward needs real image-token ids; count its parts instead: the vision
    # tower on the image and OPT on 32 query embeddings + the caption (the Q-Former, ~0.1B
    # parameters, is counted in parameters but not in FLOPs)
    with torch.device("meta"):
        params = sum(p.numel() for p in blip2().parameters())
    vis = count(lambda: blip2().vision_model, lambda: {"pixel_values": torch.randn(1, 3, 224, 224)})
    lm = count(lambda: blip2().language_model, lambda: {"inputs_embeds": torch.randn(1, 32 + caption, 2560)})  # fmt: skip
    out["blip2_opt_2.7b_224"] = {"parameters": int(params),
                                 "gflops_per_image": round(vis["gflops_per_image"] + lm["gflops_per_image"], 2)}  # fmt: skip
    r18 = out["resnet18_224"]
    for name in ("vit_gpt2_224", "blip2_opt_2.7b_224"):
        out[f"resnet18_vs_{name}"] = {"parameter_ratio": round(out[name]["parameters"] / r18["parameters"], 1),
                                      "flop_ratio": round(out[name]["gflops_per_image"] / r18["gflops_per_image"], 1)}  # fmt: skip
    return out


# -- training throughput (--train) ---------------------------------------------------------
VARIANTS = {  # name -> threads, bf16 autocast, channels_last, batch, torch.compile
    "fp32_1thread": dict(threads=1),
    "fp32_2threads": dict(threads=2),
    "fp32_channels_last_2threads": dict(threads=2, channels_last=True),
    "bf16_2threads": dict(threads=2, bf16=True),
    "bf16_channels_last_2threads": dict(threads=2, bf16=True, channels_last=True),
    "bf16_batch512_2threads": dict(threads=2, bf16=True, batch=512),
    "compile_fp32_2threads": dict(threads=2, compile=True),
    "compile_bf16_2threads": dict(threads=2, bf16=True, compile=True),
    # the `cifar` stem (3x3 stride 1, no max-pool: 32x32 maps into layer1), as the CIFAKE run trains
    "cifar_stem_bf16_channels_last_2threads": dict(
        threads=2, bf16=True, channels_last=True, stem="cifar"
    ),
}


def train_setup(
    bf16=False, channels_last=False, batch=256, compile=False, seed=0, stem="cifar-maxpool"
):
    """The CIFAKE student as sidflow.train.distill builds it, AdamW, one training step."""
    import torch.nn.functional as F

    from sidflow.devices import autocast_to
    from sidflow.models.student import StudentConfig, create_student

    torch.manual_seed(seed)
    model = create_student("resnet18", StudentConfig(image_size=32, stem=stem)).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=5e-4)
    net = torch.compile(model) if compile else model
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=fmt)
    y = torch.randint(0, 2, (batch,))
    dtype = torch.bfloat16 if bf16 else None

    def step() -> torch.Tensor:
        with autocast_to(torch.device("cpu"), dtype):
            out = net(x)
        loss = F.cross_entropy(out["logits"].float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return model, step, x, y


def train_variant(name: str, seconds: float) -> dict:
    """One variant, in this process (the parent runs each in a fresh one)."""
    v = dict(VARIANTS[name])
    torch.set_num_threads(v.pop("threads"))
    _, step, x, _ = train_setup(**v)
    t = time.perf_counter()
    step()  # compiles under torch.compile
    first = time.perf_counter() - t
    res = timed(step, x.shape[0], min_s=seconds, min_iters=3, warmup=1)
    return {"batch": x.shape[0], "threads": torch.get_num_threads(),
            "first_step_s": round(first, 1)} | res  # fmt: skip


def bf16_check(batch: int = 64) -> dict:
    """Two training steps in fp32 and under bf16 autocast from the same weights and batch:
    the loss before and after one AdamW update, and the first step's gradient agreement."""
    m32, step32, _, _ = train_setup(batch=batch)
    m16, step16, _, _ = train_setup(bf16=True, batch=batch)  # same seed: same weights, batch
    same = all(torch.equal(a, b) for a, b in zip(m32.parameters(), m16.parameters(), strict=True))
    loss = [step32().item(), step16().item()]
    g32, g16 = (torch.cat([p.grad.flatten() for p in m.parameters()]) for m in (m32, m16))
    after = [step32().item(), step16().item()]
    return {"batch": batch, "same_initial_weights": same,
            "loss_fp32": round(loss[0], 6), "loss_bf16": round(loss[1], 6),
            "abs_diff": round(abs(loss[1] - loss[0]), 6),
            "rel_diff": round(abs(loss[1] - loss[0]) / abs(loss[0]), 6),
            "grad_cosine": round(torch.nn.functional.cosine_similarity(g32, g16, dim=0).item(), 5),
            "grad_norm_ratio": round((g16.norm() / g32.norm()).item(), 5),
            "loss_after_step_fp32": round(after[0], 6), "loss_after_step_bf16": round(after[1], 6),
            "abs_diff_after_step": round(abs(after[1] - after[0]), 6)}  # fmt: skip


def train_bench(args) -> dict:
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    out = {"model": "resnet18 cifar-maxpool 32px, AdamW, cross-entropy, model step only",
           "seconds_per_variant": args.train_seconds, "variants": {}}  # fmt: skip
    for name in args.variants:
        budget = args.compile_budget if VARIANTS[name].get("compile") else 120
        cmd = [sys.executable, __file__, "--train-variant", name, "--train-seconds",
               str(args.train_seconds)]  # fmt: skip

        def child(cmd=cmd, budget=budget) -> dict:
            t = time.perf_counter()
            with tempfile.TemporaryDirectory() as cache:
                env = os.environ | {"TORCHINDUCTOR_CACHE_DIR": cache}  # a cold compile
                try:
                    p = subprocess.run(cmd, capture_output=True, text=True, env=env,
                                       timeout=budget + 4 * args.train_seconds + 60)  # fmt: skip
                    row = json.loads(p.stdout.strip().splitlines()[-1]) if p.returncode == 0 \
                        else {"failed": f"exit {p.returncode}: {p.stderr.strip()[-600:]}"}  # fmt: skip
                except subprocess.TimeoutExpired:
                    row = {"failed": f"no result within {time.perf_counter() - t:.0f} s"}
            return row | {"wall_s": round(time.perf_counter() - t, 1)}

        out["variants"][name] = row = quiet(child, args.retries, args.quiet_wait)
        print(f"[train] {name}: {json.dumps(row)}", flush=True)
    base = out["variants"].get("fp32_1thread", {}).get("images_per_s")
    for row in (r for r in out["variants"].values() if base and "images_per_s" in r):
        row["gain_vs_fp32_1thread"] = round(row["images_per_s"] / base, 2)
    out["bf16_vs_fp32_step"] = bf16_check()
    print(f"[train] bf16 check: {out['bf16_vs_fp32_step']}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--tiny", action="store_true", help="the default part, with a mode flag")
    ap.add_argument("--real-teachers", action="store_true", help="see bench/teachers.py")
    ap.add_argument("--train", action="store_true", help="student training throughput")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--train-seconds", type=float, default=15.0)
    ap.add_argument("--compile-budget", type=float, default=180.0, help="seconds to compile")
    ap.add_argument("--retries", type=int, default=2, help="re-measure when others ran")
    ap.add_argument("--quiet-wait", type=float, default=90.0, help="max s to wait for quiet")
    ap.add_argument("--train-variant", choices=list(VARIANTS), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help="default results/bench/student[-mode].json")
    args = ap.parse_args()
    if args.train_variant:  # child process of --train
        print(json.dumps(train_variant(args.train_variant, args.train_seconds)))
        return
    tiny = args.tiny or not (args.train or args.real_teachers)
    device = torch.device(args.device)
    result = {"device": str(device), "threads": torch.get_num_threads(), "machine": machine()}
    if tiny:
        result["real_checkpoint_sizes"] = real_sizes()
        print(json.dumps(result["real_checkpoint_sizes"], indent=1), flush=True)
        if not args.skip_speed:
            result["images_per_s"] = speed(args, device)
    if args.real_teachers:
        sys.path.insert(0, str(Path(__file__).parent))
        from teachers import real_teachers

        result["real_teachers"] = real_teachers(
            ["--retries", str(args.retries), "--quiet-wait", str(args.quiet_wait)]
        )  # its other options: run bench/teachers.py
    if args.train:
        result["train"] = train_bench(args)
    modes = [m for m, on in (("train", args.train), ("real-teachers", args.real_teachers)) if on]
    out = args.out or f"results/bench/{'-'.join(['student', *modes])}.json"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
