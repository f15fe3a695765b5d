"""SPCT data from the CPU world (pure): GRM items from the policy's own samples, judgments written from ground
truth, the RFT filter, phase-2 rows and meta-RM labels.

- **Ground truth** is the exact step checker (``ArithProcessReward(aggregation='mean')``'s maths): the share of
  steps that replay correctly; only a fully correct chain reaches 1.0.
- **Items**: per query, one multi-response item (2 to ``max_responses`` distinct samples with exactly one best)
  and one single-response item labelled 1 (fully correct) or 0. Train and test are disjoint by query.
- **Template judgments**: ``Specific Criteria`` (weighted principles), ``Analysis`` (per response, the first
  wrong step the checker finds) and ``Scores: \\boxed{...}``, in exactly the format
  ``twinloop.rewards.generative.parse_scores`` reads; the scores always satisfy Eq. 10.
"""
from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from twinloop.rewards.generative import format_grm_prompt, judgment_correct, unpermute
from twinloop.rewards.process import split_steps

from twinloop.tasks.arith import boxed_int, check_step, parse_chain, parse_expression, step_correctness

CRITERIA = ("Specific Criteria: correct steps (weight 5), operands from the expression (weight 3), "
            "right answer (weight 2)")


@dataclass
class Item:
    """One GRM training or test item: a policy query, its responses and their ground-truth rewards."""

    query: str
    expression: str
    responses: list[str]
    rewards: list[float]  # n >= 2: step-checker shares with exactly one maximum; n = 1: the 0/1 label
    split: str = "train"
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def binary(self) -> bool:
        return len(self.responses) == 1

    @property
    def best(self) -> int:
        return max(range(len(self.rewards)), key=lambda i: self.rewards[i])

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------------------------ ground truth
def truth_reward(expression: str, text: str) -> float:
    """The exact step checker's mean step correctness; 0.0 without a boxed last step (as ``arith_process``)."""
    steps = split_steps(text, strip=True)
    if not steps or boxed_int(steps[-1]) is None:
        return 0.0
    scores = step_correctness(expression, steps)
    return sum(scores) / len(scores)


def first_error(expression: str, text: str) -> str | None:
    """The first wrong step the checker finds, in words (None: the response is fully correct)."""
    steps = split_steps(text, strip=True)
    if not steps:
        return "no steps"
    scores = step_correctness(expression, steps)
    tree, answered = parse_expression(expression), False
    for k, (step, ok) in enumerate(zip(steps, scores), start=1):
        chain = parse_chain(step)
        if ok:
            tree = check_step(tree, step)[1]
            answered = answered or chain is None
            continue
        if answered:
            return f"step {k} comes after the answer"
        if chain is None:
            value = boxed_int(step)
            if value is None:
                return f"step {k} is not an equation"
            return f"answer {value} is wrong" if k == len(steps) else f"step {k} answers too early"
        ops, z = chain
        x, op, y = ops[0]
        values = [_apply(a, o, b) for a, o, b in ops] + [z]
        wrong = next((i for i in range(len(values) - 1) if values[i] != values[i + 1]), None)
        if wrong is not None:
            a, o, b = ops[wrong]
            return f"step {k} is wrong, {a} {o} {b} = {values[wrong]} not {values[wrong + 1]}"
        return f"step {k} uses {x} {op} {y}, not in the expression"
    return None if boxed_int(steps[-1]) is not None else "no answer"


def _apply(x: int, op: str, y: int) -> int:
    return x + y if op == "+" else x - y if op == "-" else x * y


def template_scores(rewards: Sequence[float]) -> list[int]:
    """Integer scores that satisfy Eq. 10 for ground truth ``rewards``: n = 1 gives the 0/1 label; n >= 2 gives
    10 to a fully correct response and 1 + int(7 r) (1-7) to the others, the unique best raised above the rest."""
    if len(rewards) == 1:
        return [int(rewards[0] >= 1.0)]
    scores = [10 if r >= 1.0 else 1 + int(7 * max(0.0, r)) for r in rewards]
    j = max(range(len(rewards)), key=lambda i: rewards[i])
    scores[j] = max(scores[j], max(s for i, s in enumerate(scores) if i != j) + 1)
    return scores


def template_judgment(expression: str, responses: Sequence[str], rewards: Sequence[float]) -> str:
    """The three-line judgment for responses in the order shown (rewards in the same order)."""
    parts = []
    for i, text in enumerate(responses, start=1):
        err = first_error(expression, text)
        parts.append(f"Response {i}: {'correct' if err is None else err}.")
    scores = ", ".join(str(s) for s in template_scores(rewards))
    return f"{CRITERIA}\nAnalysis: {' '.join(parts)}\nScores: \\boxed{{{scores}}}"


# ------------------------------------------------------------------------------------------------ items
def items_for_query(query: str, expression: str, samples: Sequence[str], rng: random.Random, max_responses: int = 4,
                    fits: Callable[[Item], bool] | None = None) -> list[Item]:
    """One multi-response item (2..max_responses distinct samples, exactly one best: the best is a highest-reward
    sample, the others strictly below it) and one single-response item; ``fits`` rejects an item too long for
    the judge (a multi item then drops responses down to 2)."""
    unique = sorted(set(samples))
    if not unique:
        return []
    rewards = {t: truth_reward(expression, t) for t in unique}
    out = []
    top = max(rewards.values())
    bests = [t for t in unique if rewards[t] == top]
    rest = [t for t in unique if rewards[t] < top]
    rng.shuffle(rest)
    n = min(rng.randint(2, max(2, max_responses)), 1 + len(rest))
    while n >= 2:
        chosen = [rng.choice(bests)] + rest[:n - 1]
        rng.shuffle(chosen)
        item = Item(query, expression, chosen, [rewards[t] for t in chosen])
        if fits is None or fits(item):
            out.append(item)
            break
        n -= 1
    one = rng.choice(unique)
    single = Item(query, expression, [one], [1.0 if rewards[one] >= 1.0 else 0.0])
    if fits is None or fits(single):
        out.append(single)
    return out


def split_by_query(items: Sequence[Item], test_share: float, seed: int = 0) -> tuple[list[Item], list[Item]]:
    """Train and test items, disjoint by query: a seeded ``test_share`` of the distinct queries go to test."""
    if not 0.0 <= test_share < 1.0:
        raise ValueError(f"test_share must be in [0, 1), got {test_share}")
    queries = sorted({it.query for it in items})
    random.Random(seed).shuffle(queries)
    test_q = set(queries[:round(test_share * len(queries))])
    train = [Item(**{**it.to_json(), "split": "train"}) for it in items if it.query not in test_q]
    test = [Item(**{**it.to_json(), "split": "test"}) for it in items if it.query in test_q]
    return train, test


def split_report(train: Sequence[Item], test: Sequence[Item]) -> dict[str, Any]:
    """Sizes, and the share of items where a response is fully correct, per split and item kind."""
    def part(items: Sequence[Item]) -> dict[str, Any]:
        multi = [it for it in items if not it.binary]
        single = [it for it in items if it.binary]
        return {"items": len(items), "queries": len({it.query for it in items}), "multi": len(multi),
                "single": len(single), "responses_per_multi": dict(sorted(Counter(len(it.responses)
                                                                                  for it in multi).items())),
                "share_any_correct": _share(items, lambda it: max(it.rewards) >= 1.0),
                "share_multi_best_correct": _share(multi, lambda it: max(it.rewards) >= 1.0),
                "share_single_label_1": _share(single, lambda it: it.rewards[0] >= 1.0)}

    overlap = {it.query for it in train} & {it.query for it in test}
    return {"train": part(train), "test": part(test), "queries_shared": len(overlap)}


def _share(items: Sequence[Any], pred: Callable[[Any], bool]) -> float | None:
    return sum(1 for it in items if pred(it)) / len(items) if items else None


# ------------------------------------------------------------------------------------------------ rows
def shown(item: Item, rng: random.Random) -> tuple[list[int], str, list[float]]:
    """A shuffled presentation: (order, GRM prompt, rewards in shown order); order[p] = response at position p."""
    order = list(range(len(item.responses)))
    rng.shuffle(order)
    prompt = format_grm_prompt(item.query, [item.responses[i] for i in order], binary=item.binary)
    return order, prompt, [item.rewards[i] for i in order]


def sft_rows(items: Sequence[Item], seed: int = 0) -> list[dict[str, Any]]:
    """SFT warm-up rows (TRL prompt-completion, conversational): a shuffled GRM prompt and its template judgment."""
    rng = random.Random(seed)
    rows = []
    for it in items:
        order, prompt, rewards = shown(it, rng)
        judgment = template_judgment(it.expression, [it.responses[i] for i in order], rewards)
        rows.append({"prompt": [{"role": "user", "content": prompt}],
                     "completion": [{"role": "assistant", "content": judgment}]})
    return rows


def rl_rows(items: Sequence[Item], seed: int = 0) -> list[dict[str, Any]]:
    """Phase-2 rows: a shuffled GRM prompt and the shown order's ground-truth ``rewards`` (read by
    ``SPCTTrainingReward``)."""
    rng = random.Random(seed)
    rows = []
    for it in items:
        _, prompt, rewards = shown(it, rng)
        rows.append({"prompt": [{"role": "user", "content": prompt}], "rewards": rewards})
    return rows


@dataclass
class RFTChoice:
    """Which RFT samples of one item are kept (indices into the non-hinted samples, and the hinted one)."""

    keep: list[int]
    keep_hinted: bool
    too_easy: bool


def rft_select(nonhinted_correct: Sequence[bool], hinted_correct: bool | None) -> RFTChoice:
    """Phase-1 rejective filter (ALGORITHMS.md SPCT): drop incorrect outputs; an item whose N_RFT non-hinted
    outputs are all correct is too easy and dropped whole (its hinted attempt too); the one hinted attempt
    (None: not made) is kept when correct."""
    if nonhinted_correct and all(nonhinted_correct):
        return RFTChoice([], False, True)
    return RFTChoice([i for i, ok in enumerate(nonhinted_correct) if ok], bool(hinted_correct), False)


def rft_rates(choices: Sequence[RFTChoice], n_rft: int, hinted_tried: int) -> dict[str, Any]:
    """Acceptance rates: non-hinted kept / sampled over the items not too easy, hinted kept / tried."""
    kept_items = [c for c in choices if not c.too_easy]
    nh_kept = sum(len(c.keep) for c in kept_items)
    h_kept = sum(c.keep_hinted for c in kept_items)
    return {"items": len(choices), "too_easy": len(choices) - len(kept_items),
            "nonhinted_sampled": n_rft * len(choices), "nonhinted_correct_all_items":
                sum(len(c.keep) for c in choices) + n_rft * (len(choices) - len(kept_items)),
            "nonhinted_kept": nh_kept, "nonhinted_acceptance": nh_kept / (n_rft * len(kept_items)) if kept_items
            else None, "hinted_tried": hinted_tried, "hinted_kept": h_kept,
            "hinted_acceptance": h_kept / hinted_tried if hinted_tried else None,
            "items_with_data": sum(1 for c in kept_items if c.keep or c.keep_hinted)}


def drop_always_right(items: Sequence[Any], correct: Sequence[Sequence[bool]]) -> list[Any]:
    """Phase-2 filter: drop the items whose every sample from the starting model was correct."""
    if len(items) != len(correct):
        raise ValueError(f"{len(items)} items but {len(correct)} correctness lists")
    return [it for it, flags in zip(items, correct) if not (flags and all(flags))]


def meta_rows(item: Item, judgments: Sequence[Any]) -> list[dict[str, Any]]:
    """Meta-RM examples from GRM judgments of one item (``Judgment``: un-permuted ``scores``, ``order``,
    ``text``): the GRM prompt as shown, the judgment text, and the label 1.0 iff Eq. 10 holds."""
    rows = []
    for j in judgments:
        prompt = format_grm_prompt(item.query, [item.responses[i] for i in j.order], binary=item.binary)
        rows.append({"prompt": prompt, "completion": j.text,
                     "label": 1.0 if judgment_correct(j.scores, item.rewards) else 0.0})
    return rows


def correct_in_shown_order(scores_shown: list[int] | None, order: Sequence[int], item: Item) -> bool:
    """Eq. 10 for scores read in the shown order."""
    return judgment_correct(None if scores_shown is None else unpermute(scores_shown, order), item.rewards)


def majority_pick_accuracy(item: Item) -> float:
    """Expected accuracy of picking a response whose boxed answer is the most common one (ties: uniform)."""
    answers = [boxed_int(r) for r in item.responses]
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return 1.0 / len(item.responses)
    top = max(counts.values())
    picks = [i for i, a in enumerate(answers) if a is not None and counts[a] == top]
    return sum(1.0 for i in picks if i == item.best) / len(picks)
