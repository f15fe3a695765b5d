"""What ``twinloop_reward.json`` says: the reward kind, its class, its settings and how to call it.

The settings are exactly the constructor keywords of the reward class (read back from a live object with
``settings_of``), so loading a bundle rebuilds the same Reward object. The ``call`` block restates, for a
reader without twinloop, the input format, the template and parser, and the score range.
"""
from __future__ import annotations

from typing import Any

KINDS = ("orm", "prm", "grm", "pairwise", "meta")
SPEC_FILE = "twinloop_reward.json"
FORMAT_VERSION = 1

# kind -> reward classes it may hold (module path, class name); the first is the default
CLASSES: dict[str, tuple[str, ...]] = {
    "orm": ("ScalarRM",),
    "meta": ("ScalarRM",),
    "prm": ("TokenClassifierPRM", "YesNoProbePRM"),
    "grm": ("GenerativeReward",),
    "pairwise": ("PairwiseVerifier",),
}
MODULES = {"ScalarRM": "twinloop.rewards.scalar", "TokenClassifierPRM": "twinloop.rewards.process",
           "YesNoProbePRM": "twinloop.rewards.process", "GenerativeReward": "twinloop.rewards.generative",
           "PairwiseVerifier": "twinloop.rewards.pairwise"}
# the transformers head each class reads
HEADS = {"ScalarRM": "sequence_classification", "TokenClassifierPRM": "token_classification",
         "YesNoProbePRM": "causal_lm", "GenerativeReward": "causal_lm", "PairwiseVerifier": "causal_lm"}


def reward_class(name: str) -> type:
    import importlib

    if name not in MODULES:
        raise ValueError(f"unknown reward class {name!r}; bundles hold one of {sorted(MODULES)}")
    return getattr(importlib.import_module(MODULES[name]), name)


def class_for(kind: str, architecture: str | None) -> str:
    """The reward class of a kind, picked by the model head for a PRM (token classifier or Yes/No probe)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "prm" and architecture and architecture.endswith("ForCausalLM"):
        return "YesNoProbePRM"
    return CLASSES[kind][0]


def _delimiter(reward: Any) -> str | dict[str, int]:
    """A PRM's delimiter as given to its constructor: the text, or ``{"token_id": id}``."""
    from twinloop.rewards.process import text_ids

    if list(reward.tag_ids) == text_ids(reward.tokenizer, reward.delimiter_text):
        return reward.delimiter_text
    return {"token_id": int(reward.tag_ids[0])}


def _first_token_text(tokenizer: Any, token_id: int, what: str) -> str:
    from twinloop.rewards.process import text_ids

    text = tokenizer.decode([token_id])
    if not text or text_ids(tokenizer, text)[:1] != [token_id]:
        raise ValueError(f"the {what} answer token {token_id} does not survive a decode/encode round trip")
    return text


def settings_of(reward: Any) -> dict[str, Any]:
    """Constructor keywords that rebuild ``reward`` (its model or engine aside)."""
    name = type(reward).__name__
    if name == "ScalarRM":
        return {"sigmoid": reward.sigmoid, "max_length": reward.max_length, "fallback": reward.fallback}
    if name == "TokenClassifierPRM":
        return {"delimiter": _delimiter(reward), "aggregation": reward.aggregation, "fallback": reward.fallback}
    if name == "YesNoProbePRM":
        return {"delimiter": _delimiter(reward), "aggregation": reward.aggregation, "fallback": reward.fallback,
                "question": reward.question, "yes": _first_token_text(reward.tokenizer, reward.yes_id, "yes"),
                "no": _first_token_text(reward.tokenizer, reward.no_id, "no")}
    if name == "GenerativeReward":
        return {"k": reward.k, "temperature": reward.temperature, "max_tokens": reward.max_tokens,
                "mode": reward.mode, "binary": reward.binary, "k_meta": reward.k_meta}
    if name == "PairwiseVerifier":
        return {"temperature": reward.temperature, "max_tokens": reward.max_tokens, "template": reward.template,
                "both_orders": reward.both_orders}
    raise ValueError(f"{name} cannot be exported as a reward bundle; exportable: {sorted(MODULES)}")


def constructor_kwargs(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings from JSON to constructor keywords (a token-id delimiter back to an int)."""
    out = dict(settings)
    if isinstance(out.get("delimiter"), dict):
        out["delimiter"] = int(out["delimiter"]["token_id"])
    return out


def score_range(cls: str, settings: dict[str, Any]) -> list[float | None]:
    """[low, high] of the scores; None where unbounded (a raw logit)."""
    if cls == "ScalarRM":
        return [0.0, 1.0] if settings.get("sigmoid") else [None, None]
    if cls == "GenerativeReward":
        from twinloop.rewards.generative import BINARY_RANGE, SCORE_RANGE

        lo, hi = BINARY_RANGE if settings.get("binary") else SCORE_RANGE
        return [float(lo), float(hi)]
    return [0.0, 1.0]


def call_description(kind: str, cls: str, settings: dict[str, Any], tokenizer: Any,
                     meta_rm: str | None = None) -> dict[str, Any]:
    """How to call the model without twinloop: input format, templates, parser, aggregation."""
    if cls == "ScalarRM":
        what = ("a GRM judging prompt (twinloop.rewards.generative.format_grm_prompt) as the prompt and the GRM "
                "judgment as the completion" if kind == "meta" else "the prompt and the completion")
        return {"input": f"{what}: chat prompts through the chat template with the completion as the assistant "
                         "turn, else prompt + completion + eos as text (TRL RewardTrainer format)",
                "output": "the raw logit of the single label at the last token"
                          + (", mapped through a sigmoid" if settings.get("sigmoid") else ""),
                "truncation": "keep the last max_length tokens" if settings.get("max_length") else None}
    if cls in ("TokenClassifierPRM", "YesNoProbePRM"):
        from twinloop.rewards.process import text_ids

        delim = settings["delimiter"]
        tag_ids = [delim["token_id"]] if isinstance(delim, dict) else text_ids(tokenizer, delim)
        out = {"step_delimiter": tokenizer.decode(tag_ids) if isinstance(delim, dict) else delim,
               "step_token_ids": tag_ids,
               "input": "prompt ids (chat template with generation prompt for chat prompts), then for each step "
                        "its text ids followed by the step tokens",
               "aggregation": settings["aggregation"],
               "no_step_fallback": settings["fallback"]}
        if cls == "TokenClassifierPRM":
            out["step_score"] = ("P(good) read at the last step token of each step: sigmoid of one label, or "
                                 "softmax label 1 of two or more")
        else:
            out["step_score"] = (f"P({settings['yes']!r}) over {{{settings['yes']!r}, {settings['no']!r}}} for the "
                                 f"next token after prompt + steps so far + {settings['question']!r}")
        return out
    if cls == "GenerativeReward":
        from twinloop.rewards.generative import GRM_TEMPLATE, HINT

        return {"template": GRM_TEMPLATE, "hint": HINT, "input": "the template as one user chat message",
                "parser": "the last \\boxed{...} holds one integer per response, comma-separated, within the "
                          "score range; anything else is an invalid judgment",
                "voting": "voting@k: k samples at the temperature, response order shuffled per sample and "
                          "un-permuted, scores summed over valid samples (Eq. 14)",
                "voting_k": settings["k"], "meta_rm": meta_rm,
                "meta_voting": "keep the k_meta judgments the meta RM rates highest (default k // 2)"
                if meta_rm else None}
    from twinloop.rewards.pairwise import RATING_MAX, RATING_MIN

    return {"template": settings["template"], "input": "the template as one user chat message",
            "rating_format": "<rating_A>X</rating_A><rating_B>Y</rating_B>",
            "rating_range": [RATING_MIN, RATING_MAX],
            "preference": "P(A > B) = 1/2 + (rating_A - rating_B) / 18; 1/2 when unparseable",
            "reward": "mean P(completion > peer) over the other completions of the same prompt"}


def make_spec(kind: str, cls: str, settings: dict[str, Any], tokenizer: Any, *, architecture: str | None,
              weights: str, base_model: str | None, meta_rm: str | None = None) -> dict[str, Any]:
    """The whole ``twinloop_reward.json`` document."""
    if cls not in CLASSES.get(kind, ()):
        raise ValueError(f"a {kind!r} bundle holds {' or '.join(CLASSES[kind])}, not {cls}")
    if meta_rm and cls != "GenerativeReward":
        raise ValueError("only a GRM bundle can reference a meta RM")
    return {"format_version": FORMAT_VERSION, "kind": kind, "reward_class": f"{MODULES[cls]}.{cls}",
            "model": {"architecture": architecture, "head": HEADS[cls], "weights": weights, "base_model": base_model},
            "settings": settings, "score_range": score_range(cls, settings),
            "call": call_description(kind, cls, settings, tokenizer, meta_rm)}


TRAINER_KINDS = {"outcome": "orm", "process": "prm", **{k: k for k in KINDS}}


def from_trainer_spec(doc: dict[str, Any], architecture: str | None) -> dict[str, Any]:
    """A spec as twinloop's trainers write it next to their output (``{"kind": "outcome", "class":
    "module:Class", "kwargs": {...}}``), in export form (weights full, no call block)."""
    cls = str(doc.get("class", "")).replace(":", ".").rsplit(".", 1)[-1]
    kind = TRAINER_KINDS.get(str(doc.get("kind")))
    if kind is None or cls not in CLASSES[kind]:
        raise ValueError(f"trainer reward spec names kind {doc.get('kind')!r} and class {doc.get('class')!r}, "
                         f"which twinloop cannot load")
    return {"kind": kind, "reward_class": f"{MODULES[cls]}.{cls}",
            "model": {"architecture": architecture, "head": HEADS[cls], "weights": "full", "base_model": None},
            "settings": dict(doc.get("kwargs") or {}), "call": {}}


def check_spec(spec: Any, where: str) -> None:
    """One-line error for a document that is not a twinloop reward spec this version reads."""
    if not isinstance(spec, dict) or spec.get("kind") not in KINDS or "reward_class" not in spec:
        raise ValueError(f"{where} is not a twinloop reward spec (needs kind in {KINDS} and reward_class)")
    if spec.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{where} has format_version {spec['format_version']}; this twinloop reads "
                         f"<= {FORMAT_VERSION}")
    cls = spec["reward_class"].rsplit(".", 1)[-1]
    if cls not in CLASSES[spec["kind"]]:
        raise ValueError(f"{where}: a {spec['kind']!r} bundle cannot hold {cls}")
    if cls == "GenerativeReward":
        from twinloop.rewards.generative import GRM_TEMPLATE

        if spec.get("call", {}).get("template", GRM_TEMPLATE) != GRM_TEMPLATE:
            raise ValueError(f"{where} was exported with a different GRM template than this twinloop uses")
