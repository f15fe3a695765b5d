"""Verifier-guided iterative refinement (IAD, arXiv 2504.01931): the verifier scores the candidates, and
the best ones with their scores are fed back to the generator for another round.

Round 0 samples from the plain prompt; each later round shows the ``feedback_k`` best candidates so far
(with scores) inside ``feedback_template`` and samples again. The N samples are spread evenly over
``rounds`` rounds. The answer is the best-scored candidate of all rounds. Rounds, feedback size and the
template are [check] defaults. Each round is one engine call and one reward call for all problems.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twinloop.infer.engine import Engine, Request
from twinloop.infer.search._common import (
    Budget,
    Candidate,
    Problem,
    SearchConfig,
    SearchResult,
    Tracker,
    argbest,
    candidate_finish,
    make_result,
    reward_prompt,
    score_outcomes,
)
from twinloop.rewards.base import message_text

FEEDBACK_TEMPLATE = ("{prompt}\n\nEarlier attempts, each with a verifier's score (higher is better):\n\n"
                     "{attempts}\nWrite a new, improved solution.")
ATTEMPT_TEMPLATE = "[Attempt {i}, score {score:.2f}]\n{text}\n[End of attempt {i}]\n"


NEEDS_REWARD = "outcome"  # the reward kind it searches with: outcome, process, or a judge alias (or None)
BUDGET_FREE = False  # True: one sample whatever the budget


@dataclass
class RefineConfig(SearchConfig):
    rounds: int = 2
    feedback_k: int = 2
    feedback_template: str = FEEDBACK_TEMPLATE
    attempt_template: str = ATTEMPT_TEMPLATE


Config = RefineConfig  # the config class twinloop eval builds for this procedure


def round_sizes(n: int, rounds: int) -> list[int]:
    """n samples over ``rounds`` rounds, as even as possible, earlier rounds first; no empty rounds."""
    rounds = max(1, min(rounds, n))
    return [n // rounds + (1 if r < n % rounds else 0) for r in range(rounds)]


def feedback_request(problem: Problem, engine: Engine, shown: Sequence[Candidate], config: RefineConfig) -> Request:
    """The problem's prompt with the shown attempts and their scores appended to the last user turn."""
    attempts = "".join(config.attempt_template.format(i=i + 1, score=c.score or 0.0, text=c.text)
                       for i, c in enumerate(shown))
    base = reward_prompt(problem, engine)
    content = config.feedback_template.format(prompt=message_text(base), attempts=attempts)
    if isinstance(base, list):
        return Request(messages=list(base[:-1]) + [{"role": base[-1].get("role", "user"), "content": content}],
                       lora=config.lora)
    return Request(text=content, lora=config.lora)


def run(problems: Sequence[Problem], engine: Engine, reward: Any, budget: Budget | None = None,
        config: RefineConfig | None = None) -> list[SearchResult]:
    """``reward`` is the verifier (any outcome reward); ``budget.n`` is the total number of samples."""
    budget, config = budget or Budget(), config or RefineConfig()
    if reward is None:
        raise ValueError("iterative_refine needs a verifier reward to score the attempts")
    tracker = Tracker(problems, budget)
    cands: list[list[Candidate]] = [[] for _ in problems]
    trace: list[list[dict[str, Any]]] = [[] for _ in problems]
    exhausted = [False] * len(problems)
    for r, size in enumerate(round_sizes(budget.n, config.rounds)):
        live = []
        for pi in range(len(problems)):
            if tracker.exhausted(pi):
                exhausted[pi] = True
            else:
                live.append(pi)
        if not live:
            break
        owned: list[tuple[int, Request]] = []
        for pi in live:
            ranked = sorted(cands[pi], key=lambda c: -(c.score if c.score is not None else float("-inf")))
            shown = ranked[: config.feedback_k] if r else []
            owned.append((pi, feedback_request(problems[pi], engine, shown, config) if shown
                           else problems[pi].request(config.lora)))
            trace[pi].append({"round": r, "shown": [c.score for c in shown]})
        new: list[tuple[int, Candidate]] = []
        for (pi, _), res in zip(owned, tracker.generate(engine, owned, config.sampling(n=size))):
            for c in res.completions:
                new.append((pi, Candidate(text=c.text, token_ids=list(c.token_ids), answer=config.answer_fn(c.text),
                                          finish_reason=candidate_finish(c.finish_reason))))
        left = {pi: tracker.rm_calls_left(pi) for pi in live}
        scored = []
        for pi, c in new:
            if left[pi] is not None and left[pi] <= 0:
                exhausted[pi] = True
                continue
            left[pi] = None if left[pi] is None else left[pi] - 1
            scored.append((pi, c))
        for (_, c), s in zip(scored, score_outcomes(reward, tracker, engine, [(pi, c.text) for pi, c in scored])):
            c.score = s
        for pi, c in new:
            cands[pi].append(c)
    usage = tracker.finish()
    return [make_result("iterative_refine", p, cands[pi], argbest([c.score for c in cands[pi]]), usage[pi],
                        "budget" if exhausted[pi] else "done", exhausted[pi], trace=trace[pi])
            for pi, p in enumerate(problems)]
