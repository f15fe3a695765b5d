"""Partial trajectories for step-level search (beam, DVTS, particle filtering, ePF, A*).

A SearchPath holds its prompt ids and generated ids, so the next step is requested with
``Request(prompt_ids=prompt + generated)`` and the engine's prefix cache hits. Extensions of many paths
of many problems go to the engine in one call; the PRM scores many prefixes in one call. Each path
belongs to exactly one problem: nothing here mixes problems.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twinloop.infer.engine import Completion, Engine, Request
from twinloop.infer.search._common import Candidate, SearchConfig, Tracker, aggregate_steps, score_steps
from twinloop.infer.search._stepper import EOS, TRUNCATED

ACTIVE, FINISHED, CUT = "active", "eos", "truncated"


@dataclass
class SearchPath:
    problem: int
    prompt_ids: list[int] | None = None  # known after the first engine call for this problem
    gen_ids: list[int] = field(default_factory=list)
    text: str = ""
    steps: list[str] = field(default_factory=list)
    step_scores: list[float] = field(default_factory=list)
    status: str = ACTIVE
    node: int = 0  # id in the problem's trace
    parent: int | None = None

    @property
    def active(self) -> bool:
        return self.status == ACTIVE

    def value(self, how: str) -> float:
        """Aggregated step score (0.0 before any step)."""
        return aggregate_steps(self.step_scores, how)

    def candidate(self, config: SearchConfig, how: str | None = None) -> Candidate:
        reason = {FINISHED: "stop", CUT: "length"}.get(self.status, "budget")
        return Candidate(text=self.text, token_ids=list(self.gen_ids), finish_reason=reason,
                         answer=config.answer_fn(self.text), score=self.value(how or config.aggregation),
                         step_scores=list(self.step_scores), steps=list(self.steps))


class Forest:
    """Per-problem traces: every path ever created becomes a node {id, parent, step, status, score}."""

    def __init__(self, n_problems: int) -> None:
        self.nodes: list[list[dict[str, Any]]] = [[{"id": 0, "parent": None, "step": "", "status": "root"}]
                                                  for _ in range(n_problems)]

    def add(self, path: SearchPath) -> None:
        nodes = self.nodes[path.problem]
        path.node = len(nodes)
        nodes.append({"id": path.node, "parent": path.parent, "step": path.steps[-1] if path.steps else "",
                      "status": path.status, "tokens": len(path.gen_ids)})

    def scored(self, path: SearchPath, how: str) -> None:
        self.nodes[path.problem][path.node]["score"] = path.value(how)


def root(problem: int) -> SearchPath:
    return SearchPath(problem=problem)


def request_for(path: SearchPath, tracker: Tracker, config: SearchConfig) -> Request:
    if path.prompt_ids is None:
        return tracker.problems[path.problem].request(config.lora)
    return Request(prompt_ids=path.prompt_ids + path.gen_ids, lora=config.lora)


def child(path: SearchPath, prompt_ids: list[int], c: Completion, config: SearchConfig) -> SearchPath:
    """The path extended by one generated step; its status from the stepper and the length caps.
    ``prompt_ids`` is what the engine saw (the root's prompt ids come from the first call)."""
    stepper = config.stepper
    outcome = stepper.outcome(c)
    step = stepper.step_text(c)
    prompt = path.prompt_ids if path.prompt_ids is not None else prompt_ids
    new = SearchPath(problem=path.problem, prompt_ids=list(prompt), gen_ids=path.gen_ids + list(c.token_ids),
               text=path.text + c.text, steps=path.steps + ([step] if step.strip() else []),
               step_scores=list(path.step_scores), parent=path.node)
    if outcome == EOS:
        new.status = FINISHED
    elif outcome == TRUNCATED or len(new.gen_ids) >= config.max_tokens or len(new.steps) >= config.max_steps:
        new.status = CUT
    return new


def extend(tracker: Tracker, engine: Engine, config: SearchConfig, paths: Sequence[SearchPath], n: int,
           temperature: float | None = None, forest: Forest | None = None) -> list[list[SearchPath]]:
    """``n`` one-step children for each path, all paths of all problems in one engine call.

    One call shares one max_tokens (the largest room left), so a path may overshoot ``config.max_tokens``
    by less than one step; it is then marked truncated. Every child will cost one PRM call, so a problem
    near its token or RM-call cap gets fewer children (paths in order; a path may get none) or shorter
    steps, never more than the caps allow (``Tracker.generate``).
    """
    if not paths:
        return []
    room = max(1, max(config.max_tokens - len(p.gen_ids) for p in paths))
    sampling = config.stepper.sampling(config.sampling(n=n, temperature=temperature), remaining_tokens=room, n=n)
    owned = [(p.problem, request_for(p, tracker, config)) for p in paths]
    out: list[list[SearchPath]] = []
    for p, res in zip(paths, tracker.generate(engine, owned, sampling, rm_per_sample=1)):
        kids = [child(p, res.prompt_ids, c, config) for c in res.completions]
        if forest is not None:
            for kid in kids:
                forest.add(kid)
        out.append(kids)
    return out


def score(prm: Any, tracker: Tracker, engine: Engine, paths: Sequence[SearchPath], how: str = "last",
          forest: Forest | None = None) -> None:
    """PRM step scores for every path's prefix in one call. A path whose steps did not change since its
    last scoring (EOS right after a delimiter) keeps its scores without a new call."""
    todo = [p for p in paths if p.steps and len(p.step_scores) != len(p.steps)]
    rows = score_steps(prm, tracker, engine, [(p.problem, p.steps) for p in todo])
    for p, row in zip(todo, rows):
        if row is not None:  # None: over the RM-call cap, left unscored
            p.step_scores = row
    if forest is not None:
        for p in paths:
            forest.scored(p, how)


def clone(path: SearchPath) -> SearchPath:
    return SearchPath(problem=path.problem, prompt_ids=path.prompt_ids, gen_ids=list(path.gen_ids), text=path.text,
                steps=list(path.steps), step_scores=list(path.step_scores), status=path.status, node=path.node,
                parent=path.parent)
