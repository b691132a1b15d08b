"""LoRA adapters (peft) for the teachers; which modules get them is config.

model = add_lora(model, {"enabled": True, "r": 8, "language_model": ["q_proj", "v_proj"],
                         "qformer": ["query", "value"]}, lm_prefix="language_model", qformer_prefix="qformer")
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger(__name__)


def lora_target_regex(spec: dict, lm_prefix: str, qformer_prefix: str | None) -> str:
    parts = []
    lm = spec.get("language_model", ["q_proj", "v_proj"])
    if lm:
        parts.append(rf"{re.escape(lm_prefix)}\..*\.({'|'.join(map(re.escape, lm))})")
    qf = spec.get("qformer", [])
    if qf and qformer_prefix:
        parts.append(
            rf"{re.escape(qformer_prefix)}\..*attention\.attention\.({'|'.join(map(re.escape, qf))})"
        )
    if not parts:
        raise ValueError("lora: no target modules (set language_model and/or qformer)")
    return "|".join(f"(?:{p})" for p in parts)


def add_lora(
    model, spec: dict, lm_prefix: str, qformer_prefix: str | None = None, modules_to_save=None
):
    """Wrap ``model`` with LoRA adapters; only adapters (and ``modules_to_save``) train."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=int(spec.get("r", 8)),
        lora_alpha=int(spec.get("alpha", 16)),
        lora_dropout=float(spec.get("dropout", 0.05)),
        target_modules=lora_target_regex(spec, lm_prefix, qformer_prefix),
        modules_to_save=list(modules_to_save or []) or None,
        bias="none",
    )
    peft_model = get_peft_model(model, cfg)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in peft_model.parameters())
    log.info(
        "LoRA: %d of %d parameters trainable (%.2f%%)",
        trainable,
        total,
        100 * trainable / max(total, 1),
    )
    return peft_model
