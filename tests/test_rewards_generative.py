"""SPCT generative RM: worked examples from ALGORITHMS.md, parser, Eq. 10, voting@k and meta-guided voting."""
import re

import pytest
from twinloop.infer.engine import Completion, Result, Usage
from twinloop.rewards.generative import (
    GenerativeReward,
    SPCTTrainingReward,
    format_grm_prompt,
    judgment_correct,
    last_boxed,
    meta_guided_vote,
    parse_scores,
    spct_reward,
    unpermute,
    vote,
)

_RESPONSE = re.compile(r"\[The Begin of Response \d+\]\n(.*?)\n\[The End of Response \d+\]", re.DOTALL)


class JudgeEngine:
    """Scores the responses it is shown: sample s gives each response text the score ``plans[s][text]``.

    Writing scores in the shown order lets tests check that GenerativeReward un-permutes them.
    """

    tokenizer = None

    def __init__(self, plans, garbage=()):
        self.plans, self.garbage, self.calls, self.shown = list(plans), set(garbage), 0, []

    def generate(self, requests, sampling):
        self.sampling = sampling
        out = []
        for r in requests:
            s = self.calls
            self.calls += 1
            shown = _RESPONSE.findall(r.messages[-1]["content"])
            self.shown.append(shown)
            plan = self.plans[s % len(self.plans)]
            scores = ", ".join(str(plan[t]) for t in shown)
            text = "I refuse." if s in self.garbage else (
                f"Specific Criteria: correctness (100%).\nAnalysis: looked at it.\nScores: \\boxed{{{scores}}}")
            out.append(Result(prompt_ids=[0] * 20, completions=[Completion([1] * 7, text, "stop")],
                              usage=Usage(prompt_tokens=20, generated_tokens=7)))
        return out


def test_worked_example_eq10():
    rewards = [1, 0]  # n = 2, response 1 is best
    assert spct_reward(parse_scores(r"Scores: \boxed{7, 4}", 2), rewards) == 1
    assert spct_reward(parse_scores(r"Scores: \boxed{6, 6}", 2), rewards) == -1
    assert parse_scores(r"Scores: \boxed{7}", 2) is None
    assert spct_reward(parse_scores(r"Scores: \boxed{7}", 2), rewards) == -1


def test_worked_example_voting():
    assert vote([(7, 4), (5, 6), (8, 3)]) == [20, 13]
    plans = [{"A": 7, "B": 4}, {"A": 5, "B": 6}, {"A": 8, "B": 3}]
    grm = GenerativeReward(JudgeEngine(plans), k=3, seed=1)
    result = grm.vote("q", ["A", "B"])
    assert result.totals == [20, 13] and result.best == 0
    assert [j.scores for j in result.judgments] == [[7, 4], [5, 6], [8, 3]]


def test_eq10_edge_cases():
    assert judgment_correct([9, 3, 2], [0, 1, 0]) is False
    assert judgment_correct([3, 9, 2], [0, 1, 0]) is True
    assert judgment_correct([3, 9, 9], [0, 1, 0]) is False  # ties with the best fail
    assert judgment_correct([1], [1]) is True and judgment_correct([0], [1]) is False
    assert judgment_correct(None, [1]) is False
    with pytest.raises(ValueError, match="exactly one best"):
        judgment_correct([5, 4], [1, 1])
    with pytest.raises(ValueError):
        judgment_correct([], [])


@pytest.mark.parametrize(
    "text, n, rng, expected",
    [
        (r"\boxed{7, 4}", 2, (1, 10), [7, 4]),
        (r"Scores: \boxed{1, 2} no wait Scores: \boxed{ 10 ,3 }", 2, (1, 10), [10, 3]),
        (r"\boxed{7,4,}", 2, (1, 10), None),
        (r"\boxed{7, 11}", 2, (1, 10), None),
        (r"\boxed{0, 5}", 2, (1, 10), None),
        (r"\boxed{7.5, 4}", 2, (1, 10), None),
        (r"\boxed{7, 4", 2, (1, 10), None),
        (r"\boxed{\frac{1}{2}, 4}", 2, (1, 10), None),
        (r"\boxed{1}", 1, (0, 1), [1]),
        (r"\boxed{0}", 1, (0, 1), [0]),
        (r"\boxed{2}", 1, (0, 1), None),
        ("Scores: 7, 4", 2, (1, 10), None),
        (None, 2, (1, 10), None),
    ],
)
def test_parse_scores(text, n, rng, expected):
    assert parse_scores(text, n, rng) == expected


def test_last_boxed_and_unpermute():
    assert last_boxed(r"\boxed{a} \boxed{b{c}}") == "b{c}"
    assert last_boxed("none") is None
    # shown order [1, 0]: position 0 showed response 1
    assert unpermute([4, 7], [1, 0]) == [7, 4]


def test_meta_guided_vote_keeps_top_half():
    lists = [(7, 4), (5, 6), None, (8, 3)]
    assert meta_guided_vote(lists, [0.9, 0.1, 5.0, 0.8]) == [15, 7]  # k=4 -> keep 2, invalid never kept
    assert meta_guided_vote(lists, [0.9, 0.1, 5.0, 0.8], k_meta=1) == [7, 4]
    assert meta_guided_vote([None, None], [1, 2]) is None
    with pytest.raises(ValueError):
        meta_guided_vote(lists, [1.0])


def test_prompt_template_lists_responses():
    p = format_grm_prompt("What is 2+2?", ["4", "5"], hint=1)
    assert "[The Begin of Response 1]\n4\n[The End of Response 1]" in p
    assert "[The Begin of Response 2]\n5\n[The End of Response 2]" in p
    assert p.endswith("The best response is: Response 1")
    assert "\\boxed{x, x}" in p
    with pytest.raises(ValueError):
        format_grm_prompt("q", ["a", "b"], binary=True)


def test_shuffled_order_is_unpermuted():
    plans = [{"r0": 1, "r1": 2, "r2": 3, "r3": 4}]
    eng = JudgeEngine(plans)
    grm = GenerativeReward(eng, k=8, seed=0)
    result = grm.vote("q", ["r0", "r1", "r2", "r3"])
    assert all(j.scores == [1, 2, 3, 4] for j in result.judgments)
    assert len({tuple(s) for s in eng.shown}) > 1  # the order really was shuffled
    assert eng.sampling.temperature == 0.5 and result.best == 3


def test_meta_rm_guided_voting_through_engine():
    plans = [{"A": 9, "B": 1}, {"A": 1, "B": 9}, {"A": 2, "B": 8}, {"A": 8, "B": 2}]

    def prefers_a(prompts, completions):  # a meta RM that trusts judgments rating A highly
        out = []
        for p, c in zip(prompts, completions):
            shown = _RESPONSE.findall(p)
            scores = [int(x) for x in re.search(r"\\boxed\{(.*)\}", c).group(1).split(",")]
            out.append(float(dict(zip(shown, scores))["A"]))
        return out

    grm = GenerativeReward(JudgeEngine(plans), k=4, meta_rm=prefers_a, seed=0)
    result = grm.vote("q", ["A", "B"])
    assert result.totals == [17, 3] and result.best == 0 and result.used == 2
    assert GenerativeReward(JudgeEngine(plans), k=4, seed=0).vote("q", ["A", "B"]).totals == [20, 20]


def test_trl_callable_pointwise_and_group_with_fallback():
    plans = [{"good": 9, "bad": 2}]
    eng = JudgeEngine(plans, garbage={1})
    grm = GenerativeReward(eng, k=1)
    comps = [[{"role": "assistant", "content": "good"}], "bad", "good"]
    scores = grm(["q", "q", "q"], comps)
    assert scores == [9.0, 1.0, 9.0]  # sample 1 is garbage -> lowest score, counted
    assert grm.usage.unparseable == 1 and grm.usage.model_calls == 3
    assert grm.usage.input_tokens == 60 and grm.usage.output_tokens == 21

    grm = GenerativeReward(JudgeEngine([{"good": 9, "bad": 2}, {"good": 7, "bad": 4}]), k=2, mode="group")
    assert grm(["q", "q", "p"], ["good", "bad", "bad"]) == [8.0, 3.0, 3.0]
    with pytest.raises(ValueError):
        GenerativeReward(eng, mode="nope")


def test_spct_training_reward_callable():
    r = SPCTTrainingReward()
    out = r(["p"] * 4, [r"Scores: \boxed{7, 4}", r"\boxed{6, 6}", [{"role": "assistant", "content": r"\boxed{1}"}],
                        "nothing"],
            rewards=[[1, 0], [1, 0], [1], [0]])
    assert out == [1.0, -1.0, 1.0, -1.0]
    assert r.usage.unparseable == 1


def test_real_engine_path_with_lora(vllm_engine, lora_dirs):
    """A random tiny model writes no valid judgment: every sample falls back, nothing raises, usage adds up."""
    adapter, _ = lora_dirs
    grm = GenerativeReward(vllm_engine, lora=str(adapter), k=2, max_tokens=8, mode="group")
    out = grm(["What is 2+2?"] * 2, ["4", [{"role": "assistant", "content": "5"}]])
    # one group (same prompt), k = 2 judgments; 8 tokens cannot hold "Scores: \\boxed{a, b}" after the criteria,
    # so both judgments are invalid, both are counted, and each completion falls back to the lowest score
    assert out == [1.0, 1.0]
    assert grm.usage.model_calls == 2 and grm.usage.output_tokens > 0
    assert grm.usage.input_tokens > 100 and grm.usage.unparseable == 2
    result = GenerativeReward(vllm_engine, k=2, max_tokens=8).vote("q", ["a", "b"])
    assert len(result.judgments) == 2 and all(j.order for j in result.judgments)
