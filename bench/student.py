"""Student vs teachers: inference speed on this machine, and the real checkpoints' sizes.

    python bench/student.py                  # CPU, ~2-4 minutes
    python bench/student.py --device cuda --out results/bench/student-gpu.json

1. Images/s of the student (ResNet18; ImageNet stem at 224 px, the CIFAR stem at 32 px)
   and of each teacher's scoring pass (teacher-forced caption likelihoods + embedding,
   what the cache step runs) at batch 1 and 64, same settings, and the student/teacher
   speed ratio. Teachers here are the tiny configs the demo trains (same classes as the
   real ones); their real sizes are in part 2.
2. Parameter counts and FLOPs per image for the real checkpoints' configurations
   (ResNet18, ViT-GPT2 = ViT-B/16 + GPT-2, BLIP-2 OPT-2.7B), built on the ``meta``
   device (no weights, no memory, no download) and counted with
   ``torch.utils.flop_counter`` (1 multiply-add = 2 FLOPs).

Prints JSON and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


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
            with torch.no_grad():
                s = images_per_s(lambda x: student(x), batch, size, device)  # noqa: B023
                row = {"student_resnet18": round(s, 1)}
                for name, t in teachers.items():
                    tps = images_per_s(lambda x: t.score(x), batch, size, device)  # noqa: B023
                    row[f"teacher_{name}_tiny"] = round(tps, 1)
                    row[f"student_over_{name}"] = round(s / tps, 2)
            out[f"{size}px_batch{batch}"] = row
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
    lm = count(
        lambda: blip2().language_model,
        lambda: {"inputs_embeds": torch.randn(1, 32 + caption, 2560)},
    )
    out["blip2_opt_2.7b_224"] = {
        "parameters": int(params),
        "gflops_per_image": round(vis["gflops_per_image"] + lm["gflops_per_image"], 2),
    }
    for name in ("vit_gpt2_224", "blip2_opt_2.7b_224"):
        out[f"resnet18_vs_{name}"] = {
            "parameter_ratio": round(
                out[name]["parameters"] / out["resnet18_224"]["parameters"], 1
            ),
            "flop_ratio": round(
                out[name]["gflops_per_image"] / out["resnet18_224"]["gflops_per_image"], 1
            ),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--out", default="results/bench/student.json")
    args = ap.parse_args()
    device = torch.device(args.device)
    result = {"device": str(device), "threads": torch.get_num_threads()}
    result["real_checkpoint_sizes"] = real_sizes()
    print(json.dumps(result["real_checkpoint_sizes"], indent=1), flush=True)
    if not args.skip_speed:
        result["images_per_s"] = speed(args, device)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
