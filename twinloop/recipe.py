"""Recipes: YAML files that the trainers and ``twinloop eval`` read.

A plain recipe is one flat mapping of settings. A **co-design recipe** names its task and reward once, at the
top, and its ``train:`` and ``eval:`` sections both read them, so the reward that trains the policy is, spec
for spec, the reward that searches with it::

    task: arith
    reward: "arith_process(aggregation='mean')"
    train: {model_name_or_path: checkpoints/tiny-arith-policy, max_steps: 400, ...}
    eval: {methods: [greedy, best_of_n], budgets: [4, 8], ...}

``section(path, "train")`` gives the flat settings a trainer parses: the train section plus ``task`` and
``reward_funcs: [reward]``; ``section(path, "eval")`` the eval section plus ``task`` and ``reward``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

SECTIONS = ("train", "eval")
SHARED = ("task", "reward")


def read(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"recipe {path} is not valid YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(data, dict):
        raise ValueError(f"recipe {path} must be a mapping of settings, got {type(data).__name__}")
    return data


def is_codesign(data: dict[str, Any]) -> bool:
    return any(isinstance(data.get(s), dict) for s in SECTIONS)


def section(path: str | Path, name: str) -> dict[str, Any]:
    """The flat settings of one section (``train`` or ``eval``); a plain recipe is returned as it is."""
    data = read(path)
    if not is_codesign(data):
        return data
    unknown = sorted(set(data) - set(SECTIONS) - set(SHARED))
    if unknown:
        raise ValueError(f"recipe {path}: unknown top-level key {unknown[0]!r}; a co-design recipe holds "
                         f"{', '.join(SHARED + SECTIONS)}")
    if name not in data:
        raise ValueError(f"recipe {path} has no {name!r} section")
    out = dict(data[name] or {})
    for key in SHARED:
        if key in out:
            raise ValueError(f"recipe {path}: {key!r} belongs at the top, shared by train and eval, not in {name}:")
    if "task" in data:
        out["task"] = data["task"]
    if "reward" in data:
        if name == "train":
            out["reward_funcs"] = [data["reward"]] + list(out.pop("extra_reward_funcs", []) or [])
        else:
            out["reward"] = data["reward"]
    return out


def flat_config(path: str | Path, name: str, folder: str | Path) -> str:
    """A co-design recipe's section written as a flat YAML file in ``folder`` (what TrlParser reads); a plain
    recipe's own path."""
    import yaml

    if not is_codesign(read(path)):
        return str(path)
    out = Path(folder) / f"{Path(path).stem}.{name}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(section(path, name), sort_keys=False))
    return str(out)
