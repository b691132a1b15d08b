"""The explanation study's VQA scorer: answer parsing, generator names, error tables, and the
published figures recomputed exactly from the recorded answers in ../shared."""

import json

import pandas as pd
import pytest

from helpers import SHARED
from sidflow.data.archive import extract
from sidflow.evaluate.vqa import (
    MULTIPLE_CHOICE,
    OTHER,
    TRUE_FALSE,
    canonical_generator,
    error_table,
    load_answers,
    load_questions,
    parse_answer,
    score_answers,
)

VQA_ZIP = SHARED / "datasets" / "aigen-vqa" / "aigen-vqa.zip"


@pytest.mark.parametrize(
    ("text", "kind", "parsed"),
    [
        ("Real", TRUE_FALSE, "Real"),
        (" fake.", TRUE_FALSE, "Fake"),
        ("FAKE, because the hands are wrong", TRUE_FALSE, "Fake"),
        ("Answer: real", TRUE_FALSE, "Real"),
        ("It is fake", TRUE_FALSE, OTHER),  # the answer must start with the word
        ("Realistic", TRUE_FALSE, OTHER),
        ("", TRUE_FALSE, OTHER),
        (None, TRUE_FALSE, OTHER),
        ("A", MULTIPLE_CHOICE, "A"),
        ("b.", MULTIPLE_CHOICE, "B"),
        ("(C)", MULTIPLE_CHOICE, "C"),
        ("D: the shadows disagree", MULTIPLE_CHOICE, "D"),
        ("E", MULTIPLE_CHOICE, OTHER),
        ("Absolutely", MULTIPLE_CHOICE, OTHER),  # a word starting with A is not the option A
        ("The image is fake", MULTIPLE_CHOICE, OTHER),
    ],
)
def test_answers_parse_to_an_option_or_other(text, kind, parsed):
    assert parse_answer(text, kind) == parsed


def test_unknown_question_kind_is_an_error():
    with pytest.raises(ValueError, match="unknown question kind 'essay'"):
        parse_answer("A", "essay")


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("big gan", "biggan"),
        ("big_gan", "biggan"),
        ("stable diffusion 1.4", "sd1.4"),
        ("stable_diffusion_1_4", "sd1.4"),
        ("Stable Diffusion 1.5", "sd1.5"),
        ("Midjourney", "midjourney"),
        ("natural", "natural"),
    ],
)
def test_generator_spellings_are_unified(raw, canonical):
    assert canonical_generator(raw) == canonical


def _write(tmp_path, questions, answers):
    (tmp_path / "q.json").write_text(json.dumps(questions))
    (tmp_path / "a.json").write_text(json.dumps(answers))
    return load_questions(tmp_path / "q.json"), load_answers(tmp_path / "a.json")


def test_error_table_on_a_worked_example(tmp_path):
    questions = [
        {
            "id": "1",
            "image": "i/1.jpg",
            "ground_truth": "Real",
            "metadata": {"generator": "natural"},
        },
        {
            "id": "2",
            "image": "i/2.jpg",
            "ground_truth": "Fake",
            "metadata": {"generator": "big gan"},
        },
        {
            "id": "3",
            "image": "i/3.jpg",
            "ground_truth": "Fake",
            "metadata": {"generator": "big_gan"},
        },
        {"id": "4", "image": "i/4.jpg", "ground_truth": "Fake", "metadata": {"generator": "adm"}},
    ]
    answers = [{"id": "1", "answer": "Real"}, {"id": "2", "answer": "Fake"},
               {"id": "3", "answer": "I cannot tell"}, {"id": "4", "answer": "real"}]  # fmt: skip
    q, a = _write(tmp_path, questions, answers)
    assert (q["kind"] == TRUE_FALSE).all() and q["image"].iloc[0] == str(tmp_path / "i/1.jpg")
    scored = score_answers(q, a, model="m")
    assert scored["parsed"].tolist() == ["Real", "Fake", OTHER, "Real"]
    t = error_table(scored).set_index(["scope", "key"])
    assert t.loc[("overall", "all"), ["n", "errors", "other"]].tolist() == [4, 2, 1]
    assert t.loc[("overall", "all"), "error"] == 0.5
    assert t.loc[("generator", "biggan"), "error"] == 0.5  # both spellings in one row
    assert t.loc[("generator", "adm"), "error"] == 1.0
    assert t.loc[("generator", "natural"), "error"] == 0.0
    assert t.loc[("answer type", "Fake"), ["n", "errors"]].tolist() == [3, 2]


def test_mismatched_answers_and_bad_files_are_clear_errors(tmp_path):
    q = [{"id": "1", "image": "x.jpg", "ground_truth": "A", "metadata": {"generator": "adm"}}]
    questions, answers = _write(tmp_path, q, [{"id": "2", "answer": "A"}])
    assert (questions["kind"] == MULTIPLE_CHOICE).all()
    with pytest.raises(ValueError, match=r"1 unanswered \['1'\], 1 unknown ids \['2'\]"):
        score_answers(questions, answers)
    (tmp_path / "bad.json").write_text(json.dumps([{**q[0], "ground_truth": "Maybe"}]))
    with pytest.raises(ValueError, match="bad.json: ground truths"):
        load_questions(tmp_path / "bad.json")
    (tmp_path / "twice.json").write_text(json.dumps([{"id": "1", "answer": "A"}] * 2))
    with pytest.raises(ValueError, match="twice.json: question '1' is answered twice"):
        load_answers(tmp_path / "twice.json")


@pytest.fixture(scope="module")
def vqa(tmp_path_factory):
    if not VQA_ZIP.exists():
        pytest.skip("../shared/datasets/aigen-vqa is absent (outside this workplace)")
    out = tmp_path_factory.mktemp("vqa")
    extract(VQA_ZIP, out)  # the project's safe extraction (no traversal, no links)
    return out / "aigen-vqa"


@pytest.mark.data
@pytest.mark.parametrize(
    ("kind", "answers", "published_error"),
    [
        (MULTIPLE_CHOICE, "multiple-choice.base.json", 0.47),
        (MULTIPLE_CHOICE, "multiple-choice.finetuned-epoch6.json", 0.38),
        (TRUE_FALSE, "true-false.base.json", 0.38),
        (TRUE_FALSE, "true-false.finetuned-epoch6.json", 0.24),
    ],
)
def test_published_figures_are_reproduced_from_the_recorded_answers(
    vqa, kind, answers, published_error
):
    questions = load_questions(vqa / kind / "questions.json")
    assert len(questions) == (100 if kind == MULTIPLE_CHOICE else 50)
    scored = score_answers(questions, load_answers(vqa / "recorded-answers" / answers), answers)
    table = error_table(scored)
    overall = table[table["scope"] == "overall"].iloc[0]
    assert overall["error"] == pytest.approx(published_error, abs=1e-12)
    per_gen = table[table["scope"] == "generator"]
    assert per_gen["n"].sum() == len(questions) and per_gen["errors"].sum() == overall["errors"]
    assert set(per_gen["key"]) == {"natural", "adm", "biggan", "glide", "midjourney", "sd1.4",
                                   "sd1.5", "vqdm", "wukong"}  # fmt: skip
    assert pd.Series(scored["parsed"]).isin([*("Real", "Fake", "A", "B", "C", "D"), OTHER]).all()
