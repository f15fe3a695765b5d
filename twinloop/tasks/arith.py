"""twinloop's own step-checkable arithmetic task, with its ground-truth process reward.

A problem is an integer expression such as ``((17 + 25) * 3) - 40``. The chain of thought writes one
equation per step (``17 + 25 = 42``), steps separated by a blank line, then ``Answer: \\boxed{86}``.
Difficulty is the number of operations plus the operand size (``ArithConfig``).

Every step can be checked exactly: it must be arithmetically true *and* reduce a sub-expression whose
operands are both numbers in the current (replayed) expression. Replaying the steps against the expression
is what catches every wrong sample (a true equation with numbers the problem never had is still wrong).
"""
from __future__ import annotations

import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from twinloop.rewards.base import RewardBase, column, message_text
from twinloop.rewards.process import AGGREGATIONS, STEP_DELIMITER, aggregate, split_steps  # noqa: F401

ANSWER_PREFIX = "Answer: "
SPLIT_SEEDS = {"train": 0, "dev": 1, "test": 2}
TEST_SIZE = 200
DEV_SIZE = 200


@dataclass(frozen=True)
class ArithConfig:
    """Difficulty knobs [check]: defaults are the 'harder mix' of STACK.md (results up to 199)."""

    min_ops: int = 2
    max_ops: int = 4
    max_operand: int = 99  # numbers written in the problem
    max_result: int = 199  # every intermediate and final value lies in [0, max_result]
    max_factor: int = 9  # one factor of each product is at most this


# ---------------------------------------------------------------- expression trees (pure)
# A tree is an int (a number) or a tuple (op, left, right) with op in "+-*".

def evaluate(tree) -> int:
    if isinstance(tree, int):
        return tree
    op, a, b = tree
    x, y = evaluate(a), evaluate(b)
    return x + y if op == "+" else x - y if op == "-" else x * y


def render(tree, top: bool = True) -> str:
    """Fully parenthesised, except the outermost operation."""
    if isinstance(tree, int):
        return str(tree)
    op, a, b = tree
    s = f"{render(a, False)} {op} {render(b, False)}"
    return s if top else f"({s})"


_TOKEN = re.compile(r"\s*(\d+|[-+*()])")


def parse_expression(text: str):
    """Parse an integer expression with + - * and parentheses (usual precedence) into a tree."""
    text = text.replace("×", "*")
    tokens, pos = [], 0
    while pos < len(text.rstrip()):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ValueError(f"cannot parse expression {text!r} at position {pos}")
        tokens.append(m.group(1))
        pos = m.end()
    tree, rest = _parse_sum(tokens)
    if rest:
        raise ValueError(f"cannot parse expression {text!r}: trailing {''.join(rest)!r}")
    return tree


def _parse_sum(tokens):
    tree, tokens = _parse_product(tokens)
    while tokens and tokens[0] in "+-":
        op = tokens[0]
        right, tokens = _parse_product(tokens[1:])
        tree = (op, tree, right)
    return tree, tokens


def _parse_product(tokens):
    tree, tokens = _parse_atom(tokens)
    while tokens and tokens[0] == "*":
        right, tokens = _parse_atom(tokens[1:])
        tree = ("*", tree, right)
    return tree, tokens


def _parse_atom(tokens):
    if not tokens:
        raise ValueError("cannot parse expression: it ends too early")
    head, rest = tokens[0], tokens[1:]
    if head == "(":
        tree, rest = _parse_sum(rest)
        if not rest or rest[0] != ")":
            raise ValueError("cannot parse expression: unbalanced parentheses")
        return tree, rest[1:]
    if head.isdigit():
        return int(head), rest
    raise ValueError(f"cannot parse expression: unexpected {head!r}")


def reducible_paths(tree, path: tuple = ()) -> list[tuple]:
    """Paths (0 = left, 1 = right) to the operations whose two operands are numbers, left to right."""
    if isinstance(tree, int):
        return []
    _, a, b = tree
    if isinstance(a, int) and isinstance(b, int):
        return [path]
    return reducible_paths(a, path + (0,)) + reducible_paths(b, path + (1,))


def subtree(tree, path):
    for i in path:
        tree = tree[1 + i]
    return tree


def replace(tree, path, value):
    if not path:
        return value
    op, a, b = tree
    return (op, replace(a, path[1:], value), b) if path[0] == 0 else (op, a, replace(b, path[1:], value))


# ---------------------------------------------------------------- generation (seeded)

def _split(value: int, op: str, left_max: int, right_max: int, cfg: ArithConfig, rng: random.Random):
    """Operands (x, y) with x op y == value inside the bounds, or None when impossible."""
    if op == "+":
        lo, hi = max(0, value - right_max), min(value, left_max)
        if lo > hi:
            return None
        x = rng.randint(lo, hi)
        return x, value - x
    if op == "-":
        lo, hi = value, min(left_max, value + right_max)
        if lo > hi:
            return None
        x = rng.randint(lo, hi)
        return x, x - value
    pairs = []
    for d in range(2, cfg.max_factor + 1):
        if value % d == 0 and value // d >= 2:
            pairs += [(d, value // d), (value // d, d)]
    pairs = [(x, y) for x, y in pairs if x <= left_max and y <= right_max]
    return rng.choice(pairs) if pairs else None


def _shape(num_ops: int, rng: random.Random):
    """A random binary tree shape: expand a uniformly chosen leaf ``num_ops`` times (leaves are None)."""
    tree = None
    for _ in range(num_ops):
        leaves = _leaf_paths(tree)
        tree = _put(tree, rng.choice(leaves), ("?", None, None))
    return tree


def _leaf_paths(tree, path=()):
    if tree is None:
        return [path]
    return _leaf_paths(tree[1], path + (0,)) + _leaf_paths(tree[2], path + (1,))


def _put(tree, path, node):
    if not path:
        return node
    op, a, b = tree
    return (op, _put(a, path[1:], node), b) if path[0] == 0 else (op, a, _put(b, path[1:], node))


def _fill(shape, value: int, cfg: ArithConfig, rng: random.Random):
    """Assign ops and numbers top-down so that the subtree evaluates to ``value``; None if stuck."""
    if shape is None:
        return value
    _, a, b = shape
    left_max = cfg.max_operand if a is None else cfg.max_result
    right_max = cfg.max_operand if b is None else cfg.max_result
    for op in rng.sample("+-*", 3):
        xy = _split(value, op, left_max, right_max, cfg, rng)
        if xy is None:
            continue
        left, right = _fill(a, xy[0], cfg, rng), _fill(b, xy[1], cfg, rng)
        if left is not None and right is not None:
            return (op, left, right)
    return None


def generate_problem(rng: random.Random, cfg: ArithConfig = ArithConfig(), num_ops: int | None = None):
    """One expression tree. The number of operations is drawn uniformly first and kept on retries
    (re-drawing it on rejection skews the mix towards easy problems)."""
    ops = rng.randint(cfg.min_ops, cfg.max_ops) if num_ops is None else num_ops
    while True:
        tree = _fill(_shape(ops, rng), rng.randint(0, cfg.max_result), cfg, rng)
        if tree is not None:
            return tree


def solution_steps(tree, rng: random.Random | None = None, commute: float = 0.0, tens_first: float = 0.0) -> list[str]:
    """The gold chain: one equation per reduction, then the answer line. With ``rng`` the order among
    independent reductions is random (training data); without, it is left to right. With ``rng``:

    - ``commute`` is the chance that a + or * step is written with its operands swapped;
    - ``tens_first`` is the chance that a + or - step whose second operand has tens and units is written tens
      first, as a chain: ``47 + 38 = 77 + 8 = 85``.

    The step checker accepts both forms. They give a sampled policy other routes to one result, so its
    errors are less correlated across samples and majority voting has something to vote over.
    """
    steps = []
    while not isinstance(tree, int):
        paths = reducible_paths(tree)
        path = rng.choice(paths) if rng else paths[0]
        op, a, b = subtree(tree, path)
        value = evaluate((op, a, b))
        x, y = (b, a) if rng and op in "+*" and rng.random() < commute else (a, b)
        if rng and op in "+-" and y > 10 and y % 10 and rng.random() < tens_first:
            tens = y - y % 10
            steps.append(f"{x} {op} {y} = {evaluate((op, x, tens))} {op} {y % 10} = {value}")
        else:
            steps.append(f"{x} {op} {y} = {value}")
        tree = replace(tree, path, value)
    steps.append(f"{ANSWER_PREFIX}\\boxed{{{tree}}}")
    return steps


def prompt_text(expression: str) -> str:
    return f"Compute {expression} step by step."


def make_row(tree, index: int, split: str, rng: random.Random | None = None, commute: float = 0.0,
             tens_first: float = 0.0) -> dict[str, Any]:
    expression = render(tree)
    return {
        "id": f"arith-{split}-{index}",
        "expression": expression,
        "prompt": [{"role": "user", "content": prompt_text(expression)}],
        "answer": str(evaluate(tree)),
        "solution": STEP_DELIMITER.join(solution_steps(tree, rng, commute, tens_first)),
        "num_ops": count_ops(tree),
    }


def count_ops(tree) -> int:
    return 0 if isinstance(tree, int) else 1 + count_ops(tree[1]) + count_ops(tree[2])


def load(split: str = "test", n: int | None = None, seed: int | None = None,
         cfg: ArithConfig = ArithConfig()) -> list[dict[str, Any]]:
    """Seeded splits: ``test`` is a fixed 200 problems, ``dev`` 200 more, ``train`` any size.

    Train problems never repeat a dev or test expression.
    """
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown arith split {split!r}; choose from {list(SPLIT_SEEDS)}")
    if split == "train":
        rows = []
        for row in iter_train(seed=seed, cfg=cfg):
            rows.append(row)
            if len(rows) >= (1000 if n is None else n):
                return rows
    size = {"test": TEST_SIZE, "dev": DEV_SIZE}[split] if n is None else n
    rng = random.Random(SPLIT_SEEDS[split] if seed is None else seed)
    return [make_row(generate_problem(rng, cfg), i, split) for i in range(size)]


def iter_train(seed: int | None = None, cfg: ArithConfig = ArithConfig(),
               commute: float = 0.0, tens_first: float = 0.0) -> Iterator[dict[str, Any]]:
    """Endless training rows with randomised step order (and operand order, see ``solution_steps``),
    avoiding the dev and test expressions."""
    held_out = {r["expression"] for s in ("dev", "test") for r in load(s, cfg=cfg)}
    rng = random.Random(SPLIT_SEEDS["train"] if seed is None else seed)
    i = 0
    while True:
        tree = generate_problem(rng, cfg)
        if render(tree) in held_out:
            continue
        yield make_row(tree, i, "train", rng, commute, tens_first)
        i += 1


# ---------------------------------------------------------------- step checking (pure)

_TERM = re.compile(r"^\s*(-?\d+)\s*([-+*×x])\s*(-?\d+)\s*$")
_NUMBER = re.compile(r"^\s*(-?\d+)\s*\.?\s*$")
_BOXED_INT = re.compile(r"\\boxed\{\s*(-?\d+)\s*\}")


def parse_chain(step: str) -> tuple[list[tuple[int, str, int]], int] | None:
    """``x op y = z`` or a chain ``x op y = a op b = ... = z``: its operations in order and the final value."""
    *terms, last = step.split("=")
    final = _NUMBER.match(last)
    if not terms or not final:
        return None
    ops = []
    for term in terms:
        m = _TERM.match(term)
        if not m:
            return None
        ops.append((int(m.group(1)), "*" if m.group(2) in "×x" else m.group(2), int(m.group(3))))
    return ops, int(final.group(1))


def chain_is_true(ops: Sequence[tuple[int, str, int]], value: int) -> bool:
    """Every operation of a chain equals the next one, and the last equals ``value``."""
    values = [evaluate((op, x, y)) for x, op, y in ops] + [value]
    return all(a == b for a, b in zip(values, values[1:]))


def parse_equation(step: str) -> tuple[int, str, int, int] | None:
    """``(x, op, y, z)`` of an equation step: its first operation and its final value (chains included)."""
    chain = parse_chain(step)
    if chain is None:
        return None
    (x, op, y), z = chain[0][0], chain[1]
    return x, op, y, z


def boxed_int(text: str) -> int | None:
    found = _BOXED_INT.findall(text)
    return int(found[-1]) if found else None


def check_step(tree, step: str):
    """Check one step against the current expression ``tree``.

    Returns ``(ok, next_tree, parsed)``:
    - an equation ``x op y = z`` is ok when it is true and ``x op y`` (or ``y op x`` for + and *) is an
      operation of ``tree`` whose operands are both numbers. The next tree replaces that operation by
      the written ``z``, so later steps are judged against what the solution actually wrote. A chain
      ``x op y = a op b = z`` is ok when, in addition, every link is true;
    - an answer step (``\\boxed{N}``) is ok when the expression is fully reduced to N;
    - anything else is not ok, leaves the tree unchanged and has ``parsed = False``.
    """
    chain = parse_chain(step)
    if chain is None:
        value = boxed_int(step)
        if value is None:
            return False, tree, False
        return isinstance(tree, int) and tree == value, tree, True
    ops, z = chain
    x, op, y = ops[0]
    for path in reducible_paths(tree):
        node_op, a, b = subtree(tree, path)
        if node_op == op and ((a, b) == (x, y) or (op in "+*" and (a, b) == (y, x))):
            return chain_is_true(ops, z), replace(tree, path, z), True
    return False, tree, True


def _is_answer_step(step: str) -> bool:
    return parse_chain(step) is None and boxed_int(step) is not None


def step_correctness(expression: str, steps: Sequence[str]) -> list[float]:
    """1.0 / 0.0 per step by replaying ``steps`` against ``expression`` (see ``check_step``), so that a step
    reward pays for progress only:

    - the first answer step (``\\boxed{N}``) ends the solution: every step after it earns 0.0 (repeated
      answer lines included);
    - the answer step earns 1.0 only when its value *and* the final answer (the last answer step) equal the
      expression's true value, so a wrong final answer never gets full credit under any aggregation;
    - a step identical to an earlier one earns nothing by the replay itself: an equation is true only while
      it reduces the current expression (each reduction shrinks it), so a repeat pays only where the
      expression really holds the same operation twice (``(3 + 4) * (3 + 4)``).
    """
    tree = parse_expression(expression)
    truth = evaluate(tree)
    answers = [boxed_int(s) for s in steps if _is_answer_step(s)]
    final = answers[-1] if answers else None
    scores, answered = [], False
    for step in steps:
        if answered:
            scores.append(0.0)
            continue
        ok, tree, _ = check_step(tree, step)
        if _is_answer_step(step):
            answered = True
            ok = ok and boxed_int(step) == truth and final == truth
        scores.append(1.0 if ok else 0.0)
    return scores


_PROMPT_EXPR = re.compile(r"Compute (.+?) step by step\.")


def expression_from_prompt(prompt: Any) -> str | None:
    """The expression of a ``Compute ... step by step.`` prompt (text or chat messages), or None."""
    if isinstance(prompt, (list, tuple)):
        users = [m for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        prompt = users[-1] if users else prompt
    m = _PROMPT_EXPR.search(message_text(prompt))
    return m.group(1) if m else None


# ---------------------------------------------------------------- rewards

class ArithProcessReward(RewardBase):
    """Ground-truth process reward: exact per-step correctness (1.0 / 0.0, ``step_correctness``: nothing after
    the first answer step counts, and the answer step needs the true value), aggregated with ``aggregation``
    (min [check]; last / prod / mean also available). So repeating steps or answer lines never raises the
    score, and only a correct final answer can reach 1.0. The expression comes from an ``expression`` column,
    else from the prompt text. ``__call__`` scores a complete solution: one without a boxed answer step
    scores 0.0 and is counted as unparseable.
    """

    name = "arith_process"

    def __init__(self, aggregation: str = "min", delimiter: str = STEP_DELIMITER) -> None:
        super().__init__()
        aggregate([], aggregation)  # validate early
        self.aggregation = aggregation
        self.delimiter = delimiter

    def _expressions(self, prompts: Sequence[Any], columns: dict[str, Any]) -> list[str | None]:
        if "expression" in columns and columns["expression"] is not None:
            return column(columns, ["expression"], len(prompts))
        return [expression_from_prompt(p) for p in prompts]

    def step_scores(self, prompts: Sequence[Any], steps: Sequence[Sequence[str]], **columns: Any) -> list[list[float]]:
        out = []
        for expression, item_steps in zip(self._expressions(prompts, columns), steps):
            if expression is None:
                self.usage.unparseable += 1
                out.append([0.0] * len(item_steps))
                continue
            scores = step_correctness(expression, item_steps)
            self.usage.unparseable += sum(parse_equation(s) is None and boxed_int(s) is None for s in item_steps)
            out.append(scores)
        return out

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        self.usage.calls += 1
        self.usage.items += len(completions)
        texts = [message_text(c) for c in completions]
        steps = [split_steps(t, self.delimiter, strip=True) for t in texts]
        scores = self.step_scores(prompts, steps, **columns)
        out: list[float | None] = []
        for item_steps, item_scores in zip(steps, scores):
            if not item_steps or boxed_int(item_steps[-1]) is None:
                self.usage.unparseable += 1
                out.append(0.0)
            else:
                out.append(aggregate(item_scores, self.aggregation))
        return out


class ArithOutcomeReward(RewardBase):
    """1.0 when the last ``\\boxed{N}`` equals the gold ``answer`` column, else 0.0 (no box: counted)."""

    name = "arith_outcome"

    def score(self, prompt: str, completion: str, **row: Any) -> float:
        if "answer" not in row:
            raise ValueError(f"arith_outcome needs an 'answer' column; got {sorted(row)}")
        value = boxed_int(completion)
        if value is None:
            self.usage.unparseable += 1
            return 0.0
        return 1.0 if str(value) == str(row["answer"]).strip() else 0.0


def reward() -> ArithOutcomeReward:
    """The task's verifiable reward: the boxed answer against the gold (the exact process reward is
    ``ArithProcessReward``, alias ``arith_process``)."""
    return ArithOutcomeReward()


# ---------------------------------------------------------------- no-oracle verifiers (routes in _arith_routes.py)

def recompute_reward(engine: Any, **settings: Any):
    """The policy (or any Engine) re-derives each step by another route; see ``twinloop.tasks._arith_routes``."""
    from twinloop.tasks._arith_routes import recompute_reward as build

    return build(engine, **settings)
