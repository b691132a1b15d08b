"""Smoke test of the real-size teachers, without downloading a checkpoint.

    python bench/real_size_smoke.py                       # both models, writes the JSON
    python bench/real_size_smoke.py --models vitgpt2      # one model
    python bench/real_size_smoke.py --dry-config          # configs + meta-device counts only

Builds the two real teacher architectures from their published configurations, stored
in the package as ``src/sidflow/models/configs/*.json``:

* ``vitgpt2``: ``nlpconnect/vit-gpt2-image-captioning`` (ViT-base/16 224 px encoder,
  GPT-2 124M decoder with cross-attention, vocabulary 50257);
* ``blip2``: ``Salesforce/blip2-opt-2.7b`` (EVA ViT-g vision tower, Q-Former with 32
  query tokens, OPT-2.7B language model, vocabulary 50272, ``<image>`` = 50265).

The weights are random (``_from_config`` in bf16), so the compute and memory are those
of the checkpoints but nothing here says anything about accuracy. A word-level
stand-in tokenizer has the real tokenizer's size and special-token ids (OPT: pad 1,
``</s>`` 2, ``<image>`` 50265; GPT-2: ``<|endoftext|>`` 50256). The model is wrapped
in sidflow's own teacher class (``VitGpt2Teacher`` / ``Blip2Teacher``, whose
constructor takes a built model and tokenizer), so the sequences, the image-token
placement and the scoring are the pipeline's. At 224 px, batch 1, bf16 it measures:

(a) one LoRA fine-tune step: peft LoRA through ``sidflow.models.lora.add_lora`` on
    the language model (OPT ``q_proj``/``v_proj``, GPT-2 ``c_attn``), ``teacher.collate``
    and a forward with labels (what ``teacher.loss`` does), backward, an AdamW step; it
    checks that the targets exist and that only adapter parameters get gradients;
(b) one teacher-cache batch: the adapters merged (as ``load_teacher`` does), then
    ``teacher.score`` as ``build_teacher_cache`` calls it: class-caption
    log-likelihood logits for both captions, the stored embedding, greedy caption.

Per model it prints and writes (``--out``) build seconds, total and LoRA-trainable
parameters, step and cache-batch seconds, peak RSS, embedding width and image tokens
placed. A model is skipped, with the numbers, when ``params x 2 bytes x --overhead``
exceeds the available memory. It runs on the CPU, but it is the code path a GPU user
takes with the real checkpoints (``checkpoint: Salesforce/blip2-opt-2.7b``): the same
classes, teacher wrappers, LoRA targets and sequences. docs/real-size.md has a run.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import re
import resource
import time
from pathlib import Path

MODELS = {
    "vitgpt2": {
        "config": "vit-gpt2-image-captioning.json",
        "hf_id": "nlpconnect/vit-gpt2-image-captioning",
        "class": "VisionEncoderDecoderModel",
        "lm_prefix": "decoder",
        "lora_targets": ["c_attn"],
    },
    "blip2": {
        "config": "blip2-opt-2.7b.json",
        "hf_id": "Salesforce/blip2-opt-2.7b",
        "class": "Blip2ForConditionalGeneration",
        "lm_prefix": "language_model",
        "lora_targets": ["q_proj", "v_proj"],
    },
}
LORA = {"r": 8, "alpha": 16, "dropout": 0.05}
CAPTIONS = {"real": "real", "fake": "fake"}
MIB = 1024 * 1024


def config_path(name: str) -> Path:
    import sidflow.models

    return Path(sidflow.models.__file__).parent / "configs" / MODELS[name]["config"]


def load_config(name: str):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(config_path(name)))


def model_class(name: str):
    import transformers

    return getattr(transformers, MODELS[name]["class"])


def lora_spec(name: str) -> dict:
    return LORA | {"language_model": MODELS[name]["lora_targets"], "qformer": []}


def lora_targets(model, name: str) -> dict[str, int]:
    """Modules the LoRA regex of sidflow.models.lora selects -> adapter parameters at r."""
    from sidflow.models.lora import lora_target_regex

    rx = re.compile(lora_target_regex(lora_spec(name), MODELS[name]["lm_prefix"], None))
    out = {}
    for mod_name, mod in model.named_modules():
        if rx.fullmatch(mod_name):
            w = mod.weight  # nn.Linear (out, in); GPT-2 Conv1D (in, out): r * (in + out) both
            out[mod_name] = LORA["r"] * (w.shape[0] + w.shape[1])
    return out


def meta_model(name: str):
    """The model on the meta device: shapes and parameter counts, no memory."""
    import torch

    with torch.device("meta"):
        return model_class(name)._from_config(load_config(name), dtype=torch.bfloat16)


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def describe(name: str) -> dict:
    """Parameter counts and the key dimensions, from a meta-device build."""
    cfg, model = load_config(name), meta_model(name)
    targets = lora_targets(model, name)
    out = {"hf_id": MODELS[name]["hf_id"], "config": str(config_path(name)),
           "parameters": count(model), "lora_target_modules": len(targets),
           "lora_parameters": sum(targets.values())}  # fmt: skip
    if name == "blip2":
        t = cfg.text_config
        out |= {"text_hidden": t.hidden_size, "text_layers": t.num_hidden_layers,
                "vocab": t.vocab_size, "query_tokens": cfg.num_query_tokens,
                "image_token_index": cfg.image_token_index}  # fmt: skip
    else:
        out |= {"encoder_hidden": cfg.encoder.hidden_size, "decoder_layers": cfg.decoder.n_layer,
                "vocab": cfg.decoder.vocab_size,
                "cross_attention": bool(cfg.decoder.add_cross_attention)}  # fmt: skip
    return out


def stand_in_tokenizer(name: str):
    """Word-level tokenizer with the real tokenizer's length and special-token ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    if name == "blip2":  # OPT's GPT-2 BPE (50265) + "<image>" appended by the BLIP-2 processor
        size, special = 50266, {"pad_token": (1, "<pad>"), "bos_token": (2, "</s>"),
                                "eos_token": (2, "</s>"), "unk_token": (3, "<unk>")}  # fmt: skip
        extra = {load_config(name).image_token_index: "<image>"}
    else:  # GPT-2: <|endoftext|> is bos, eos and (in the teacher) pad
        eot, size = (50256, "<|endoftext|>"), 50257
        special = dict.fromkeys(("pad_token", "bos_token", "eos_token", "unk_token"), eot)
        extra = {}
    tokens = [f"<w{i}>" for i in range(size)]
    for i, tok in [*special.values(), *extra.items()]:
        tokens[i] = tok
    for i, word in enumerate(sorted({w for c in CAPTIONS.values() for w in c.split()}), start=10):
        tokens[i] = word
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=special["unk_token"][1]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **{k: v[1] for k, v in special.items()})
    if extra:
        fast.add_special_tokens({"additional_special_tokens": list(extra.values())})
    assert len(fast) == size, (len(fast), size)
    return fast


def peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def memory_check(params: int, overhead: float) -> tuple[bool, str]:
    import psutil

    need, avail = params * 2 * overhead, psutil.virtual_memory().available
    msg = (f"needs ~{need / 2**30:.1f} GiB ({params / 1e9:.2f}B params x 2 bytes x {overhead}), "
           f"{avail / 2**30:.1f} GiB available")  # fmt: skip
    return need <= avail, msg


def build(name: str):
    """The real-size model with random bf16 weights, wrapped in sidflow's teacher class."""
    import torch

    from sidflow.models.teachers import TEACHERS, TeacherConfig

    tokenizer = stand_in_tokenizer(name)
    model = model_class(name)._from_config(load_config(name), dtype=torch.bfloat16)
    if name == "blip2":  # as Blip2Teacher.build does for a from-scratch model
        std = model.config.qformer_config.initializer_range
        torch.nn.init.normal_(model.query_tokens, std=std)
    cfg = TeacherConfig(
        arch=name,
        checkpoint=MODELS[name]["hf_id"],
        image_size=224,
        captions=dict(CAPTIONS),
        precision="bf16",
        lora=lora_spec(name),
    )
    return TEACHERS.get(name)(cfg, model, tokenizer)


def lora_step(teacher, name: str, x) -> dict:
    """(a) LoRA on the language model, teacher.loss, backward, one AdamW step."""
    import torch

    from sidflow.models.lora import add_lora

    targets = lora_targets(teacher.model, name)
    assert targets, f"{name}: no module matches the LoRA targets {MODELS[name]['lora_targets']}"
    found = {t for t in MODELS[name]["lora_targets"] if any(k.endswith("." + t) for k in targets)}
    assert found == set(MODELS[name]["lora_targets"]), f"{name}: LoRA targets found: {found}"
    teacher.model = add_lora(teacher.model, teacher.cfg.lora, MODELS[name]["lm_prefix"], None)
    trainable = {n: p for n, p in teacher.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable), "non-adapter parameters train"
    labels = torch.tensor([1])  # "fake"
    batch = teacher.collate(x, labels)
    image_tokens = 0
    if name == "blip2":
        image_tokens = int((batch["input_ids"] == teacher._config.image_token_index).sum())
        queries = teacher.model.get_base_model().query_tokens.shape[1]  # Q-Former output rows
        assert image_tokens == teacher._config.num_query_tokens == queries, (image_tokens, queries)
    opt = torch.optim.AdamW(trainable.values(), lr=1e-4)
    teacher.model.train()
    t = time.perf_counter()
    loss = teacher.model(**batch).loss
    loss.backward()
    opt.step()
    seconds = time.perf_counter() - t
    with_grad = [n for n, p in teacher.model.named_parameters() if p.grad is not None]
    assert set(with_grad) == set(trainable), "gradients outside the LoRA adapters"
    assert torch.isfinite(loss), loss
    opt.zero_grad(set_to_none=True)
    return {"step_seconds": round(seconds, 2), "loss": round(loss.item(), 4),
            "parameters_trainable": sum(p.numel() for p in trainable.values()),
            "lora_target_modules": len(targets), "image_tokens_placed": image_tokens,
            "sequence_length": int(batch.get("input_ids", batch["labels"]).shape[1])}  # fmt: skip


def cache_batch(teacher, x) -> dict:
    """(b) merge the adapters (as load_teacher does), then teacher.score as the cache step."""
    import torch

    teacher.model = teacher.model.merge_and_unload()
    t = time.perf_counter()
    res = teacher.score(x)
    seconds = time.perf_counter() - t
    assert res["logits"].shape == (1, 2) and bool(torch.isfinite(res["logits"]).all())
    return {"cache_batch_seconds": round(seconds, 2), "embedding_width": res["embedding"].shape[1],
            "logits": [round(v, 3) for v in res["logits"][0].tolist()],
            "caption_tokens": teacher.cfg.max_caption_tokens}  # fmt: skip


def run_model(name: str, overhead: float) -> dict:
    import psutil
    import torch

    params = count(meta_model(name))
    ok, msg = memory_check(params, overhead)
    if not ok:
        print(f"[{name}] SKIPPED: {msg}", flush=True)
        return {"skipped": msg, "parameters": params}
    print(f"[{name}] building ({msg})", flush=True)
    t = time.perf_counter()
    teacher = build(name)
    lm = getattr(teacher.model, MODELS[name]["lm_prefix"])
    out = {"hf_id": MODELS[name]["hf_id"], "build_seconds": round(time.perf_counter() - t, 2),
           "parameters": count(teacher.model), "tokenizer_size": len(teacher.tokenizer),
           "embedding_rows": lm.get_input_embeddings().weight.shape[0],
           "rss_after_build_mib": round(psutil.Process().memory_info().rss / MIB, 1)}  # fmt: skip
    assert out["parameters"] == params, (out["parameters"], params)
    print(f"[{name}] built in {out['build_seconds']} s; LoRA step", flush=True)
    torch.manual_seed(0)
    x = torch.randn(1, 3, 224, 224, dtype=torch.bfloat16)
    out |= lora_step(teacher, name, x)
    print(f"[{name}] step {out['step_seconds']} s; cache batch", flush=True)
    out |= cache_batch(teacher, x)
    out["peak_rss_mib"] = peak_rss_mib()
    del teacher
    gc.collect()
    print(f"[{name}] {json.dumps(out)}", flush=True)
    return out


def machine() -> dict:
    import peft
    import psutil
    import torch
    import transformers

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "threads": torch.get_num_threads(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__}  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="vitgpt2,blip2", help="comma list of vitgpt2, blip2")
    ap.add_argument(
        "--dry-config",
        action="store_true",
        help="only load the configs and count parameters on the meta device",
    )
    ap.add_argument(
        "--overhead",
        type=float,
        default=1.5,
        help="memory factor over the bf16 weights for the skip check (LoRA: the frozen "
        "weights get no gradients or optimizer state)",
    )
    ap.add_argument(
        "--out",
        default=None,
        help="JSON path (default results/bench/real_size_smoke.json; dry: none)",
    )
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        ap.error(f"unknown models {unknown}; known: {', '.join(MODELS)}")
    if args.dry_config:
        result = {"dry_config": True, "models": {n: describe(n) for n in names}}
    else:
        result = {"machine": machine(), "batch": 1, "image_size": 224, "dtype": "bfloat16",
                  "models": {n: run_model(n, args.overhead) for n in names}}  # fmt: skip
    print(json.dumps(result, indent=2))
    out = args.out or (None if args.dry_config else "results/bench/real_size_smoke.json")
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
