"""``twinloop_reward.json``: the one bundle format, written by ``write_reward_json`` for the exporter and every
trainer alike, and read back by ``read_reward_json``.

The document names the reward class (``module:Class``), its settings (exactly its constructor keywords, read
from a live object with ``reward.settings()``), the spec that rebuilds it, the model head it reads, the score
range and, for a reader without twinloop, how to call the model. Everything class-specific comes from the
class itself (``kinds``, ``head``, ``export_score_range``, ``export_call``): a new exportable reward kind touches
its own module only.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from twinloop.rewards.base import class_path, import_class

KINDS = ("orm", "prm", "grm", "pairwise", "meta", "selfeval")
SPEC_FILE = "twinloop_reward.json"
FORMAT_VERSION = 2  # 2: reward_class as module:Class plus a spec string; 1 (module.Class) still reads


def class_for(kind: str, architecture: str | None) -> type:
    """The default reward class of an export kind (by the one alias dict), a PRM picked by the model head."""
    from twinloop.rewards import REWARD_ALIASES

    if kind not in KINDS or kind == "selfeval":
        raise ValueError(f"kind must be one of {', '.join(k for k in KINDS if k != 'selfeval')}, got {kind!r}")
    alias = "prm_probe" if kind == "prm" and architecture and architecture.endswith("ForCausalLM") else kind
    return import_class(REWARD_ALIASES[alias].partition("(")[0])


def spec_string(cls: type, settings: dict[str, Any]) -> str:
    return f"{class_path(cls)}({', '.join(f'{k}={v!r}' for k, v in settings.items())})"


def reward_document(cls: type, kind: str, settings: dict[str, Any], tokenizer: Any, *, architecture: str | None,
                    weights: str, base_model: str | None, meta_rm: str | None = None) -> dict[str, Any]:
    """The whole ``twinloop_reward.json`` document for a reward class and its settings."""
    if kind not in getattr(cls, "kinds", ()):
        raise ValueError(f"a {kind!r} bundle cannot hold {cls.__name__} (it is a "
                         f"{' or '.join(getattr(cls, 'kinds', ())) or 'non-model'} reward)")
    if meta_rm and "meta_rm" not in getattr(cls, "bundle_args", ()):
        raise ValueError(f"only a reward that takes a meta RM (a GRM) can carry one, not {cls.__name__}")
    extra = {"meta_rm": meta_rm} if meta_rm else {}
    return {"format_version": FORMAT_VERSION, "kind": kind, "reward_class": class_path(cls),
            "spec": spec_string(cls, settings),
            "model": {"architecture": architecture, "head": cls.head, "weights": weights, "base_model": base_model},
            "settings": settings, "score_range": cls.export_score_range(settings),
            "call": cls.export_call(settings, tokenizer, kind=kind, **extra)}


def write_reward_json(folder: str | os.PathLike, document: dict[str, Any]) -> Path:
    """Write the document into ``folder`` (checked first, so a bad one never lands)."""
    check_spec(document, str(Path(folder) / SPEC_FILE))
    path = Path(folder, SPEC_FILE)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(document, indent=1) + "\n")
    tmp.replace(path)
    return path


def write_trainer_bundle(folder: str | os.PathLike, reward: Any, kind: str, *, weights: str = "full",
                         base_model: str | None = None, tokenizer: Any = None) -> Path:
    """What a trainer writes beside the model it saved: the same document an export holds (an export adds the
    manifest), built from the live reward object."""
    folder = Path(folder)
    config = folder / "config.json"
    arch = (json.loads(config.read_text()).get("architectures") or [None])[0] if config.is_file() else None
    tok = tokenizer if tokenizer is not None else getattr(reward, "tokenizer", None)
    doc = reward_document(type(reward), kind, reward.settings(), tok, architecture=arch, weights=weights,
                          base_model=base_model)
    return write_reward_json(folder, doc)


def constructor_kwargs(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings from JSON to constructor keywords (format 1 wrote a token-id delimiter as ``{"token_id": id}``)."""
    out = dict(settings)
    if isinstance(out.get("delimiter"), dict):
        out["delimiter"] = int(out["delimiter"]["token_id"])
    return out


def check_spec(spec: Any, where: str) -> None:
    """One-line error for a document that is not a twinloop reward spec this version reads."""
    if not isinstance(spec, dict) or spec.get("kind") not in KINDS or "reward_class" not in spec:
        raise ValueError(f"{where} is not a twinloop reward spec (needs kind in {KINDS} and reward_class)")
    if spec.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{where} has format_version {spec['format_version']}; this twinloop reads "
                         f"<= {FORMAT_VERSION}")
    if not isinstance(spec.get("settings", {}), dict) or "head" not in spec.get("model", {}):
        raise ValueError(f"{where} lacks settings or model.head")


def read_reward_json(folder: str | os.PathLike) -> dict[str, Any]:
    """The folder's reward document, checked."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"reward folder {folder} not found")
    path = folder / SPEC_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {SPEC_FILE}: not a twinloop reward bundle")
    try:
        spec = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    check_spec(spec, str(path))
    return spec
