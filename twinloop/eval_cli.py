"""`twinloop eval`: search procedures on a task at several budgets (JSONL, table, plot).

The command lives in the CLI layer because it builds rewards with the one builder (``twinloop.build``), which
sits above the engines. Settings are ``twinloop.infer.eval_config.EvalConfig`` (HfArgumentParser, like the
trainers); running and resuming are ``twinloop.infer.evaluate``, tables and plots ``twinloop.infer.report``.

    twinloop eval --checkpoint checkpoints/tiny-arith-policy --task arith --methods greedy,majority,best_of_n \
        --budgets 4,8,16,32 --reward arith_process --n_problems 50
    twinloop eval --recipe recipes/arith/process.yaml --checkpoint runs/gppo-tiny-arith
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from twinloop.build import build_reward, parse_reward_spec, reward_class
from twinloop.infer import evaluate
from twinloop.infer.eval_config import parse_eval_args

PARSES_ITS_OWN_ARGV = True  # `twinloop eval ...` hands its flags to HfArgumentParser (EvalConfig)


def reward_for(spec: Any, task: str, engine: Any = None, trust_remote_code: bool = False) -> Any:
    """The run's reward on ``engine`` (a judge on the policy shares its engine); with no engine, the spec is
    only validated (no model is loaded)."""
    if engine is None:
        if spec is not None:
            reward_class(str(spec), trust_remote_code)
            check_bundle(str(spec))
        return None
    return build_reward(spec, task=task, engine=engine, trust_remote_code=trust_remote_code)


def check_bundle(spec: str) -> None:
    """A bundle spec's document and manifest, checked before any engine loads or any output is written."""
    from pathlib import Path

    parsed = parse_reward_spec(spec)
    if parsed is None or parsed.bundle is None:
        return
    from twinloop.checkpoints.export import read_spec
    from twinloop.checkpoints.manifest import verify

    document = read_spec(parsed.bundle)
    if document.get("manifest") or (Path(parsed.bundle) / "manifest.json").is_file():
        problems = verify(parsed.bundle)
        if problems:
            more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
            raise ValueError(f"reward bundle {parsed.bundle} fails its manifest check: {problems[0]}{more}; "
                             "export it again (twinloop export) or copy it again whole")


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_eval_args(sys.argv[1:] if argv is None else argv)
    trust = bool(opts.get("trust_remote_code"))
    return evaluate.run(opts, lambda spec, task, engine=None: reward_for(spec, task, engine, trust))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="--recipe FILE and EvalConfig flags (--help lists them)")


def run(args: argparse.Namespace) -> int:
    return main(args.rest)
