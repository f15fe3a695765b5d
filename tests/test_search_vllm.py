"""One integration test per procedure family through the real vLLM engine (random tiny model).

Fixed-size steps (8 tokens) make the step-level procedures take several steps whatever the random model
writes. The prompt is several KV-cache blocks long (VLLMEngine uses 32-token blocks on CPU, vLLM's default 16
on GPU), so carrying prefixes as token ids must show up as cached prompt tokens.
"""
import pytest
from twinloop.infer.search import astar, beam_search, best_of_n, dvts, epf, greedy, majority, particle_filter
from twinloop.infer.search._common import Budget, Problem, SearchConfig
from twinloop.infer.search._stepper import Stepper
from twinloop.rewards.base import RewardUsage

from twinloop import eval_cli

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

LONG = " ".join(f"item {i} is {i * 7 % 13}." for i in range(60))
PROBLEMS = [Problem(LONG + " What is item 3?", id="a"), Problem(LONG + " What is item 5?", id="b")]
SHORT = [Problem("What is 2 + 3?", id="c"), Problem([{"role": "user", "content": "What is 4 * 5?"}], id="d")]


class LengthPRM:
    """Deterministic stand-in PRM and ORM: a step scores by its length; counts one call per item."""

    __name__ = "length_prm"

    def __init__(self) -> None:
        self.usage = RewardUsage()

    def step_scores(self, prompts, steps, **columns):
        self.usage.items += len(steps)
        return [[(len(s) % 11) / 10 for s in ss] for ss in steps]

    def __call__(self, prompts, completions, **columns):
        self.usage.items += len(completions)
        return [(len(c) % 11) / 10 for c in completions]


def check_accounting(results, engine, reward=None):
    for r in results:
        assert r.usage.generated_tokens > 0 and r.usage.prompt_tokens > 0 and r.usage.engine_requests >= 1
        for c in r.candidates:
            assert c.finish_reason in {"stop", "length", "budget"}
    if reward is not None:
        assert sum(r.usage.rm_calls for r in results) == reward.usage.items


def test_one_shot_family_on_vllm(vllm_engine):
    cfg = SearchConfig(max_tokens=16, temperature=1.0)
    g = greedy.run(PROBLEMS, vllm_engine, config=cfg)
    again = greedy.run(PROBLEMS, vllm_engine, config=cfg)
    assert [r.text for r in g] == [r.text for r in again]  # temperature 0 is deterministic
    m = majority.run(PROBLEMS, vllm_engine, budget=Budget(n=4), config=cfg)
    assert all(len(r.candidates) == 4 for r in m)
    assert all(r.usage.generated_tokens == sum(len(c.token_ids) for c in r.candidates) for r in m)
    prm = LengthPRM()
    b = best_of_n.run(PROBLEMS, vllm_engine, prm, Budget(n=4), cfg)
    check_accounting(b, vllm_engine, prm)
    assert all(r.candidates[r.selected].score == max(c.score for c in r.candidates) for r in b)
    # the repeated greedy run finds its prompts' full blocks in the prefix cache (vLLM recomputes at least the
    # last prompt token, so a partial last block is never cached)
    for r in again:
        cached, prompt = r.usage.cached_prompt_tokens, r.usage.prompt_tokens
        assert cached % 16 == 0 and prompt - 32 <= cached < prompt, (cached, prompt)


@pytest.mark.parametrize("module", [beam_search, dvts, particle_filter, epf, astar])
def test_step_family_on_vllm(vllm_engine, module):
    prm = LengthPRM()
    cfg = module.Config(max_tokens=32, temperature=1.0, stepper=Stepper(tokens_per_step=8), max_steps=8)
    if hasattr(cfg, "width"):
        cfg.width = 2
    res = module.run(PROBLEMS, vllm_engine, prm, Budget(n=4), cfg)
    check_accounting(res, vllm_engine, prm)
    tok = vllm_engine.tokenizer
    for r in res:
        assert r.candidates and r.selected is not None
        assert r.usage.cached_prompt_tokens >= 128  # later steps reuse the cached prompt blocks
        for c in r.candidates:
            assert len(c.token_ids) <= 32 + 8
            if "\ufffd" not in c.text:  # a step boundary may split a multi-byte character
                assert tok.decode(c.token_ids, skip_special_tokens=True) == c.text  # ids carried = text kept


def test_budget_cap_on_vllm(vllm_engine):
    cfg = beam_search.Config(max_tokens=32, temperature=1.0, stepper=Stepper(tokens_per_step=8), width=2)
    res = beam_search.run(PROBLEMS, vllm_engine, LengthPRM(), Budget(n=4, generated_tokens=40), cfg)
    assert all(r.budget_exhausted and r.stop_reason == "budget" for r in res)
    # a hard cap: the round that would cross 40 tokens is shrunk to fit, never overshoots
    assert all(r.usage.generated_tokens <= 40 for r in res) and any(r.usage.generated_tokens > 32 for r in res)


def test_judge_families_on_vllm(vllm_engine):
    """V1 tournament, GRM voting and adaptive self-evaluation with judges run on the same vLLM engine."""
    from twinloop.infer.search import adaptive_selfeval, grm_vote, v1_tournament
    from twinloop.rewards.generative import GenerativeReward
    from twinloop.rewards.pairwise import PairwiseVerifier
    from twinloop.rewards.selfeval import SelfEvalProbe

    ver = PairwiseVerifier(vllm_engine, max_tokens=8)
    v1 = v1_tournament.run(SHORT, vllm_engine, ver, Budget(n=4),
                           v1_tournament.Config(max_tokens=16, comparisons_per_candidate=1))
    assert [r.usage.rm_calls for r in v1] == [4, 4] and sum(r.usage.rm_tokens for r in v1) == (
        ver.usage.input_tokens + ver.usage.output_tokens)
    assert all(r.selected is not None and len(r.trace[0]["mu"]) == 4 for r in v1)
    grm = GenerativeReward(vllm_engine, max_tokens=8)
    gv = grm_vote.run(SHORT, vllm_engine, grm, Budget(n=2), grm_vote.Config(max_tokens=16, k=2))
    assert [r.usage.rm_calls for r in gv] == [2, 2] and len(gv[0].trace) == 2
    probe = SelfEvalProbe(vllm_engine)
    ad = adaptive_selfeval.run(SHORT, vllm_engine, probe, Budget(n=3), adaptive_selfeval.Config(max_tokens=16))
    for r in ad:
        assert 1 <= len(r.candidates) <= 3 and r.usage.rm_calls == len(r.candidates)
        assert all(0.0 <= c.score <= 1.0 for c in r.candidates)


def test_refine_and_compute_optimal_on_vllm(vllm_engine):
    from twinloop.infer.search import compute_optimal, iterative_refine

    prm = LengthPRM()
    rf = iterative_refine.run(PROBLEMS, vllm_engine, prm, Budget(n=4), iterative_refine.Config(max_tokens=16))
    assert all(len(r.candidates) == 4 and r.usage.rm_calls == 4 for r in rf)
    assert all(r.usage.engine_requests == 2 for r in rf)  # two rounds, one request per problem each
    policy = {"difficulty": "predicted", "edges": [0.5],
              "bins": [[{"method": "greedy", "budget": 1, "accuracy": 1.0, "generated_tokens": 1.0}],
                       [{"method": "best_of_n", "budget": 2, "accuracy": 1.0, "generated_tokens": 2.0}]]}
    co = compute_optimal.run(PROBLEMS, vllm_engine, LengthPRM(), Budget(n=2),
                             compute_optimal.Config(max_tokens=16, policy=policy, probe_n=2))
    for r in co:
        chose = r.trace[0]["chose"]
        assert chose in (["greedy", 1], ["best_of_n", 2]) and r.usage.rm_calls >= 2  # probe scored 2 samples


def test_eval_shards_over_servers(openai_engine, tiny_model_dir, tmp_path):
    """`twinloop eval --servers URL,URL`: problems shard over two server clients into one JSONL."""

    from twinloop.infer import evaluate as ev

    url = openai_engine.base_url
    assert eval_cli.main(["--checkpoint", str(tiny_model_dir), "--task", "arith", "--methods", "greedy,best_of_n",
                          "--budgets", "2", "--n-problems", "4", "--max-tokens", "8", "--batch", "1",
                          "--out", str(tmp_path / "run"), "--servers", f"{url},{url}", "--no-plot"]) == 0
    rows = ev.read_rows(tmp_path / "run" / "results.jsonl")
    assert len(rows) == 8 and {r["shard"] for r in rows} == {0, 1}
    assert len({(r["method"], r["problem_id"]) for r in rows}) == 8
