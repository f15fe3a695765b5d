"""One integration test per procedure family through the real vLLM engine (random tiny model).

Fixed-size steps (8 tokens) make the step-level procedures take several steps whatever the random model
writes. The prompt is longer than vLLM's CPU block (128 tokens), so carrying prefixes as token ids must
show up as cached prompt tokens.
"""
import pytest
from twinloop.infer.search import astar, beam_search, best_of_n, dvts, epf, greedy, majority, particle_filter
from twinloop.infer.search.common import Budget, Problem, SearchConfig
from twinloop.infer.search.stepper import Stepper
from twinloop.rewards.base import RewardUsage

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

LONG = " ".join(f"item {i} is {i * 7 % 13}." for i in range(60))
PROBLEMS = [Problem(LONG + " What is item 3?", id="a"), Problem(LONG + " What is item 5?", id="b")]


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
    assert g[0].usage.cached_prompt_tokens == 0 or g[0].usage.cached_prompt_tokens % 128 == 0


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
    assert all(r.usage.generated_tokens <= 40 + 4 * 8 for r in res)
