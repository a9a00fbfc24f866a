"""The learned answer gate: trained on recorded answers, saved without pickle, used by a cascade."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from tierwise.config import GateSpec
from tierwise.errors import ConfigError
from tierwise.evals.dataset import EvalRecord, Outcome
from tierwise.evals.metrics import OutcomeTable
from tierwise.gates import build_gates
from tierwise.gates.learned import (
    ANSWER_FEATURES,
    C_GRID,
    AnswerScorer,
    LearnedGate,
    _platt,
    answer_features,
    junior_features,
)
from tierwise.messages import ChatRequest, ChatResponse, Message

MODELS = ("small", "medium", "large")
GOOD = ["The answer is {x}, because the ratio doubles each step.", "Result: {x}. Checked twice."]
BAD = ["I am not sure, maybe something about {x}?", "It depends. Possibly {x} or not."]


def records(n: int, seed: int) -> list[EvalRecord]:
    """Small answers that hedge are wrong (premium is right); confident ones are right."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        x = rng.randint(1, 999)
        good = rng.random() < 0.5
        answer = rng.choice(GOOD if good else BAD).format(x=x)
        outcomes = {
            "small": Outcome(1.0 if good else 0.0, 0.001, answer),
            "medium": Outcome(1.0, 0.01, f"The answer is {x}."),
            "large": Outcome(1.0, 0.1, f"The answer is {x}."),
        }
        out.append(
            EvalRecord(f"r{i}", "t", [{"role": "user", "content": f"What is the value for {x}?"}], outcomes)
        )
    return out


@pytest.fixture(scope="module")
def scorer() -> AnswerScorer:
    train = records(120, 1)
    return AnswerScorer().fit(train, OutcomeTable.from_records(train, MODELS))


def test_scores_good_answers_above_bad_ones(scorer: AnswerScorer) -> None:
    test = records(40, 2)
    table = OutcomeTable.from_records(test, MODELS)
    scores = scorer.predict_table(test, table)
    assert scores.shape == (40, 2)
    good = table.scores[:, 0] == 1.0
    assert scores[good, 0].min() > scores[~good, 0].max()
    # Medium always matched premium in training: its base rate is ~1.
    assert scores[:, 1].min() > 0.99


def test_round_trip_without_pickle(scorer: AnswerScorer, tmp_path: Path) -> None:
    path = scorer.save(tmp_path / "sub" / "gate.twg", extra={"data": {"prompts": 120}})
    with np.load(path, allow_pickle=False) as archive:
        assert orjson.loads(archive["meta"].tobytes())["data"] == {"prompts": 120}
    loaded = AnswerScorer.load(path)
    for text in ("Result: 5. Checked twice.", "It depends. Possibly 5 or not."):
        assert loaded.predict("What is 5?", text, 0) == pytest.approx(
            scorer.predict("What is 5?", text, 0), abs=1e-5
        )


def test_a_bad_artifact_is_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.twg"
    junk.write_text("not an archive")
    with pytest.raises(ConfigError, match="cannot read the gate artifact"):
        AnswerScorer.load(junk)
    other = tmp_path / "other.twg"
    with other.open("wb") as handle:
        np.savez(handle, meta=np.frombuffer(orjson.dumps({"format": "x/9"}), dtype=np.uint8))
    with pytest.raises(ConfigError, match="train one with `tierwise train-gate`"):
        AnswerScorer.load(other)


async def test_the_gate_in_a_cascade(scorer: AnswerScorer, tmp_path: Path) -> None:
    path = scorer.save(tmp_path / "gate.twg")
    [gate] = build_gates([GateSpec(type="learned", artifact=str(path), threshold=0.5)])
    request = ChatRequest(messages=[Message(role="user", content="What is the value for 7?")])
    good = await gate.check(request, ChatResponse(id="a", model="small", content="Result: 7. Checked twice."))
    bad = await gate.check(request, ChatResponse(id="b", model="small", content="I am not sure, maybe 7?"))
    assert (
        good.passed and good.gate == "learned" and good.score > 0.5 and "P(as good as premium)" in good.reason
    )
    assert not bad.passed and bad.score < 0.5


def test_needs_recorded_answers() -> None:
    train = records(10, 3)
    for r in train:
        r.outcomes = {m: Outcome(o.score, o.cost_usd, None) for m, o in r.outcomes.items()}
    with pytest.raises(ValueError, match="kept no answers"):
        AnswerScorer().fit(train, OutcomeTable.from_records(train, MODELS))


def test_train_gate_command(tmp_path: Path) -> None:
    data = tmp_path / "set.jsonl"
    data.write_bytes(
        b"".join(
            orjson.dumps({"id": r.id, "category": r.category, "messages": r.messages,
                          "outcomes": {m: {"score": o.score, "cost_usd": o.cost_usd, "response": o.response}
                                       for m, o in r.outcomes.items()}}) + b"\n"
            for r in records(60, 4)
        )
    )  # fmt: skip
    out = tmp_path / "g.twg"
    done = subprocess.run(
        [sys.executable, "-m", "tierwise", "train-gate", "--data", str(data), "--tiers", ",".join(MODELS), "-o", str(out)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "trained the answer gate on 60 prompts" in done.stdout and out.exists()
    assert AnswerScorer.load(out).models_ == MODELS


async def test_a_cascade_tells_the_gate_the_answering_tier_not_the_model_name(scorer: AnswerScorer) -> None:
    """Live, the config's model names differ from the training data's: the tier's position decides."""
    from tierwise.policy.cascade import judge
    from tierwise.providers.base import ProviderResult

    gate = LearnedGate(scorer, threshold=0.5)
    request = ChatRequest(messages=[Message(role="user", content="What is the value for 7?")])
    hedging = ChatResponse(id="b", model="gpt-4o-mini-2024-07-18", content="I am not sure, maybe 7?")
    at_cheap = await judge([gate], request, ProviderResult(hedging), final=False, tier=0)
    at_mid = await judge([gate], request, ProviderResult(hedging), final=False, tier=1)
    # The cheapest tier's hedging answers were wrong in training; the middle tier always matched premium.
    assert not at_cheap[0].passed and at_mid[0].passed and at_mid[0].score > 0.99
    # A position past the trained tiers is scored as the highest trained one.
    assert (await gate.check_at(request, hedging, 5)).score == at_mid[0].score
    # Without a position, an unknown model name is scored as the cheapest tier.
    assert (await gate.check(request, hedging)).score == at_cheap[0].score


def choice_records(n: int, seed: int) -> list[EvalRecord]:
    """Multiple-choice prompts answered with a bare letter: the letter alone says nothing of correctness, but
    a mid answer that agrees with the cheap one is right far more often than one that does not."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        truth = rng.choice("ABCD")
        cheap = truth if rng.random() < 0.5 else rng.choice([c for c in "ABCD" if c != truth])
        mid = truth if rng.random() < 0.6 else rng.choice([c for c in "ABCD" if c != truth])
        prompt = f"Question {i}: which is it?\nA) one\nB) two\nC) three\nD) four\nAnswer:"
        outcomes = {
            "small": Outcome(float(cheap == truth), 0.001, cheap),
            "medium": Outcome(float(mid == truth), 0.01, mid + "\n"),
            "large": Outcome(1.0, 0.1, truth),
        }
        out.append(EvalRecord(f"c{i}", "mc", [{"role": "user", "content": prompt}], outcomes))
    return out


def test_the_junior_answer_tells_a_right_mid_answer_from_a_wrong_one() -> None:
    from sklearn.metrics import roc_auc_score

    train, test = choice_records(400, 5), choice_records(300, 6)
    scorer = AnswerScorer().fit(train, OutcomeTable.from_records(train, MODELS))
    table = OutcomeTable.from_records(test, MODELS)
    mid_right = table.scores[:, 1] == 1.0
    knowing = scorer.predict_table(test, table, juniors=True)[:, 1]
    blind = scorer.predict_table(test, table, juniors=False)[:, 1]
    # Agreeing answers are right 82% of the time here, disagreeing ones 47%: a ROC AUC of about 0.68 at best.
    assert roc_auc_score(mid_right, knowing) > 0.64
    assert roc_auc_score(mid_right, blind) < 0.58
    # Calibrated: the mean score is close to the rate of right mid answers, with or without the junior.
    assert abs(knowing.mean() - mid_right.mean()) < 0.08 and abs(blind.mean() - mid_right.mean()) < 0.08
    # The cheapest tier has no junior: both ways give the same score.
    assert np.allclose(
        scorer.predict_table(test, table, juniors=True)[:, 0],
        scorer.predict_table(test, table, juniors=False)[:, 0],
    )
    assert set(scorer.chosen_c_.ravel()) <= set(C_GRID)


def test_answer_features_mean_the_same_on_any_data() -> None:
    names = dict.fromkeys(ANSWER_FEATURES, 0.0)
    mc = "Pick one.\nA) red\nB) blue\nAnswer:"
    f = dict(zip(names, answer_features(mc, "B", "stop"), strict=True))
    assert f["choice_prompt"] == 1.0 and f["choice_answered"] == 1.0
    f = dict(zip(names, answer_features(mc, "I am not sure, maybe it is green.", "stop"), strict=True))
    assert f["choice_prompt"] == 1.0 and f["choice_answered"] == 0.0 and f["hedges"] > 0
    code = "Write a python function to reverse a list."
    assert (
        dict(zip(names, answer_features(code, "Reverse it with slicing.", "length"), strict=True))[
            "code_missing"
        ]
        == 1.0
    )
    f = dict(
        zip(
            names,
            answer_features(code, "```python\ndef rev(x):\n    return x[::-1]\n```", "stop"),
            strict=True,
        )
    )
    assert f["code_missing"] == 0.0 and f["code_fences"] == 1.0 and f["truncated"] == 0.0
    restated = dict(
        zip(names, answer_features(code, "Write a python function to reverse a list.", "stop"), strict=True)
    )
    assert restated["restated"] == 1.0
    looped = dict(zip(names, answer_features("Say hi.", "hi there friend " * 20, "stop"), strict=True))
    assert looped["repetition"] > 0.8
    assert junior_features(mc, "B", "b)")[0] == 1.0 and junior_features(mc, "B", "A")[0] == 0.0


def test_platt_scaling_recovers_a_known_slope_and_offset() -> None:
    rng = np.random.default_rng(0)
    margin = rng.normal(0, 2, 20_000)
    y = rng.random(20_000) < 1 / (1 + np.exp(-(0.5 * margin - 1.0)))
    a, b = _platt(margin, y)
    assert a == pytest.approx(0.5, abs=0.05) and b == pytest.approx(-1.0, abs=0.08)


def test_an_older_gate_artifact_is_refused_with_train_it_again(tmp_path: Path) -> None:
    old = tmp_path / "old.twg"
    with old.open("wb") as handle:
        np.savez(handle, meta=np.frombuffer(orjson.dumps({"format": "tierwise-gate/1"}), dtype=np.uint8))
    with pytest.raises(ConfigError, match=r"tierwise-gate/1 gate artifact.*train it again"):
        AnswerScorer.load(old)


async def test_the_gate_uses_the_junior_answer_when_the_cascade_gives_it(tmp_path: Path) -> None:
    train = choice_records(400, 7)
    gate = LearnedGate(
        AnswerScorer.load(
            AnswerScorer().fit(train, OutcomeTable.from_records(train, MODELS)).save(tmp_path / "g.twg")
        ),
        0.5,
    )
    request = ChatRequest(
        messages=[Message(role="user", content="Question 9: which is it?\nA) one\nB) two\nAnswer:")]
    )
    answer = ChatResponse(id="m", model="medium", content="B")
    agreeing = await gate.check_at(request, answer, 1, junior="B")
    disagreeing = await gate.check_at(request, answer, 1, junior="A")
    alone = await gate.check_at(request, answer, 1)
    assert agreeing.score > alone.score > disagreeing.score


async def test_the_cascade_hands_the_junior_answer_to_the_gate(tmp_path: Path) -> None:
    from tierwise.policy.cascade import judge
    from tierwise.providers.base import ProviderResult

    train = choice_records(400, 7)
    gate = LearnedGate(AnswerScorer().fit(train, OutcomeTable.from_records(train, MODELS)), 0.5)
    request = ChatRequest(
        messages=[Message(role="user", content="Question 9: which is it?\nA) one\nB) two\nAnswer:")]
    )
    answer = ProviderResult(ChatResponse(id="m", model="medium", content="B"))
    given = await judge([gate], request, answer, final=False, tier=1, junior="B")
    direct = await gate.check_at(request, answer.response, 1, junior="B")
    alone = await judge([gate], request, answer, final=False, tier=1)
    assert given[0].score == direct.score != alone[0].score


def test_a_few_missing_junior_answers_do_not_turn_off_the_junior_model() -> None:
    from sklearn.metrics import roc_auc_score

    train, test = choice_records(400, 5), choice_records(300, 6)
    for record in train[:10]:  # the cheapest tier's answer was not kept for these
        object.__setattr__(record.outcomes[MODELS[0]], "response", None)
    scorer = AnswerScorer().fit(train, OutcomeTable.from_records(train, MODELS))
    assert not np.allclose(scorer.coef_[1, 1], scorer.coef_[0, 1])  # the mid tier's junior model was trained
    table = OutcomeTable.from_records(test, MODELS)
    knowing = scorer.predict_table(test, table, juniors=True)[:, 1]
    assert roc_auc_score(table.scores[:, 1] == 1.0, knowing) > 0.64
