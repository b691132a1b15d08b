"""RINE: what the CLIP token cache saves. CLIP forward passes vs training the head on cached tokens.

    python bench/rine.py                       # CPU, ~2-3 minutes
    python bench/rine.py --device cuda --out results/bench/rine-gpu.json

1. Images/s of the token extraction (one CLIP pass with the per-block hooks) for the real
   architectures at their input size, randomly initialised (same compute as the real
   weights; offline there are none): ViT-B/16 and ViT-L/14 at 224 px, and the demo's tiny
   encoder at 32 px.
2. Images/s of one RINE training step on cached tokens of the same shape (the paper's
   head: 4 projection layers of 1024, batch 128, BCE + contrastive).
3. For an epoch over ``--images`` training images with K cached views, the wall time with
   the cache (extract once, then train) vs re-running CLIP every epoch, and the ratio for
   ``--epochs`` epochs.

Prints JSON and writes it to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from functools import partial
from pathlib import Path

import torch

from sidflow.models.clip import ClipConfig, block_cls_tokens, build_clip
from sidflow.models.rine import RineConfig, create_rine, rine_loss

ARCHS = {
    "vit-b16-224": {"hidden_size": 768, "layers": 12, "heads": 12, "patch_size": 16, "size": 224},
    "vit-l14-224": {"hidden_size": 1024, "layers": 24, "heads": 16, "patch_size": 14, "size": 224},
    "tiny-32": {"hidden_size": 64, "layers": 4, "heads": 4, "patch_size": 4, "size": 32},
}


def rate(fn, n_per_call: int, min_seconds: float, device) -> float:
    fn()
    calls, t0 = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - t0 < min_seconds:
        fn()
        calls += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n_per_call * calls / (time.perf_counter() - t0)


def train_step(head, opt, toks, y) -> None:
    loss = rine_loss(head(toks), y, 0.2)["loss"]
    opt.zero_grad()
    loss.backward()
    opt.step()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--views", type=int, default=2)
    ap.add_argument("--out", default="results/bench/rine.json")
    args = ap.parse_args()
    dev = torch.device(args.device)
    res = {"device": str(dev), "threads": torch.get_num_threads(), "archs": {}}
    for name, a in ARCHS.items():
        tiny = {k: a[k] for k in ("hidden_size", "layers", "heads", "patch_size")}
        enc = build_clip(ClipConfig(checkpoint="tiny", image_size=a["size"], tiny=tiny)).to(dev)
        x = torch.randn(args.batch, 3, a["size"], a["size"], device=dev)
        clip_ips = rate(partial(block_cls_tokens, enc, x), args.batch, args.seconds, dev)
        head = create_rine(RineConfig(n_blocks=a["layers"], dim=a["hidden_size"])).to(dev)
        opt = torch.optim.Adam(head.parameters(), lr=1e-3)
        toks = torch.randn(128, a["layers"], a["hidden_size"], device=dev)
        y = torch.arange(128, device=dev) % 2
        head_ips = rate(partial(train_step, head, opt, toks, y), 128, args.seconds / 2, dev)
        n, k, e = args.images, args.views, args.epochs
        cached = n * (k + 1) / clip_ips + e * n / head_ips  # K train views + the clean view, once
        naive = e * n * (1 / clip_ips + 1 / head_ips)  # CLIP on every image every epoch
        res["archs"][name] = {
            "clip_params_m": round(sum(p.numel() for p in enc.parameters()) / 1e6, 1),
            "clip_images_per_s": round(clip_ips, 1),
            "head_train_images_per_s": round(head_ips, 1),
            "bytes_per_image_view": a["layers"] * a["hidden_size"] * 4,
            f"hours_{e}_epochs_cached": round(cached / 3600, 2),
            f"hours_{e}_epochs_naive": round(naive / 3600, 2),
            "speedup": round(naive / cached, 2),
        }
        print(name, json.dumps(res["archs"][name]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
