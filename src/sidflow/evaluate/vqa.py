"""Scoring the explanation study's VQA benchmark (true/false and multiple-choice questions).

The ResNet + TinyLLaVA study judges its vision-language explainer on 50 true/false questions
("Is this image real or artificially generated? Just answer with Real or Fake.") and 100
four-option explanation questions. An answer is parsed to ``Real``/``Fake`` or ``A``-``D``;
anything else is ``other`` and counts as wrong, as in the study::

    questions = load_questions("aigen-vqa/multiple-choice/questions.json")
    answers = load_answers("aigen-vqa/recorded-answers/multiple-choice.base.json")
    scored = score_answers(questions, answers)     # one row per question
    error_table(scored)                            # overall, per generator, per answer type

Generator names are spelled inconsistently in the data (``big gan`` / ``big_gan``,
``stable diffusion 1.4`` / ``stable_diffusion_1_4``); :func:`canonical_generator` maps them to
one spelling (``biggan``, ``sd1.4``), and ``natural`` is the real class.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from sidflow.data.metadata_source import canonical_generator  # noqa: F401  (re-exported)

TRUE_FALSE, MULTIPLE_CHOICE = "true-false", "multiple-choice"
OTHER = "other"
_CHOICES = {TRUE_FALSE: ("Real", "Fake"), MULTIPLE_CHOICE: ("A", "B", "C", "D")}
# "A", "A.", "(B)", "C: because ...", "Answer: D" -> the letter; "Real.", "fake, because" -> the word
_LETTER = re.compile(r"^\s*(?:answer\s*[:\-]?\s*)?\(?([ABCD])\)?(?:[\s.:,)]|$)", re.IGNORECASE)
_WORD = re.compile(r"^\s*(?:answer\s*[:\-]?\s*)?\W*(real|fake)\b", re.IGNORECASE)


def parse_answer(text: str | None, kind: str) -> str:
    """``Real``/``Fake`` (true/false) or ``A``-``D`` (multiple choice); ``other`` otherwise."""
    if kind not in _CHOICES:
        raise ValueError(f"unknown question kind {kind!r}; known: {sorted(_CHOICES)}")
    if not isinstance(text, str):
        return OTHER
    match = (_WORD if kind == TRUE_FALSE else _LETTER).match(text)
    return match.group(1).capitalize() if match else OTHER


def load_questions(path: str | Path) -> pd.DataFrame:
    """A question file as a table: ``id, kind, question, ground_truth, generator,
    object_category, image`` (image path resolved against the file's folder). The kind
    follows from the ground truths (Real/Fake or A-D)."""
    path = Path(path)
    rows = json.loads(path.read_text())
    if not isinstance(rows, list) or not rows:
        raise ValueError(f"{path}: expected a non-empty JSON list of questions")
    truths = {str(r.get("ground_truth")) for r in rows}
    kinds = [k for k, choices in _CHOICES.items() if truths <= set(choices)]
    if len(kinds) != 1:
        raise ValueError(f"{path}: ground truths {sorted(truths)} are neither Real/Fake nor A-D")
    table = pd.DataFrame(
        {
            "id": [str(r["id"]) for r in rows],
            "kind": kinds[0],
            "question": [r.get("question", "") for r in rows],
            "ground_truth": [str(r["ground_truth"]) for r in rows],
            "generator": [canonical_generator(r["metadata"]["generator"]) for r in rows],
            "object_category": [r["metadata"].get("object_category") for r in rows],
            "image": [str(path.parent / r["image"]) for r in rows],
        }
    )
    if table["id"].duplicated().any():
        raise ValueError(
            f"{path}: duplicated question ids {table['id'][table['id'].duplicated()].tolist()}"
        )
    return table


def load_answers(path: str | Path) -> dict[str, str]:
    """``{question id: answer text}`` from a JSON list of ``{"id", "answer"}``."""
    path = Path(path)
    rows = json.loads(path.read_text())
    answers: dict[str, str] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "id" not in row or "answer" not in row:
            raise ValueError(f"{path}: entry {i} is not an object with 'id' and 'answer'")
        if row["id"] in answers:
            raise ValueError(f"{path}: question {row['id']!r} is answered twice")
        answers[str(row["id"])] = row["answer"]
    return answers


def score_answers(
    questions: pd.DataFrame, answers: dict[str, str], model: str = ""
) -> pd.DataFrame:
    """One row per question: the raw answer, the parsed one and whether it is correct.
    Every question must have an answer and every answer a question (clear error otherwise)."""
    missing = sorted(set(questions["id"]) - set(answers))
    unknown = sorted(set(answers) - set(questions["id"]))
    if missing or unknown:
        raise ValueError(f"answers do not match the questions: {len(missing)} unanswered "
                         f"{missing[:3]}, {len(unknown)} unknown ids {unknown[:3]}")  # fmt: skip
    out = questions[["id", "kind", "generator", "object_category", "ground_truth"]].copy()
    out["model"] = model
    out["answer"] = [answers[i] for i in out["id"]]
    out["parsed"] = [parse_answer(a, k) for a, k in zip(out["answer"], out["kind"], strict=True)]
    out["correct"] = out["parsed"] == out["ground_truth"]
    return out


def error_table(scored: pd.DataFrame) -> pd.DataFrame:
    """Error rates by ``model`` and ``kind``: overall, per generator and per answer type (the
    ground truth: Real/Fake or the right letter). Columns: ``model, kind, scope, key, n,
    errors, error, other`` (``other``: answers that parse to neither option)."""
    frames = []
    for scope, key in (
        ("overall", None),
        ("generator", "generator"),
        ("answer type", "ground_truth"),
    ):
        by = ["model", "kind"] + ([key] if key else [])
        g = scored.assign(wrong=~scored["correct"], unparsed=scored["parsed"] == OTHER).groupby(by)
        t = g.agg(
            n=("wrong", "size"), errors=("wrong", "sum"), other=("unparsed", "sum")
        ).reset_index()
        t["scope"], t["key"] = scope, t[key] if key else "all"
        frames.append(t[["model", "kind", "scope", "key", "n", "errors", "other"]])
    table = pd.concat(frames, ignore_index=True)
    table["error"] = table["errors"] / table["n"]
    return table[["model", "kind", "scope", "key", "n", "errors", "error", "other"]]
