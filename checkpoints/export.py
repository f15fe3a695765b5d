"""Export a trained reward model as a Hugging Face folder, and load it back as the same Reward object.

An export holds safetensors weights (full, LoRA merged, or a peft adapter), the tokenizer with its chat
template, a model card (README.md with YAML front matter), ``twinloop_reward.json`` (kind, class, settings,
how to call it, score range) and ``manifest.json`` (sha256 of every file). A scalar RM export loads as
``AutoModelForSequenceClassification`` (num_labels=1) and as a TRL reward model path.

The source may be an HF model folder, a peft adapter folder, a trainer output folder (its last
``checkpoint-N``), or a DeepSpeed ZeRO checkpoint (``latest`` + ``global_stepN/``), which is consolidated to
fp32 with DeepSpeed's zero_to_fp32 utilities.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from twinloop.checkpoints import card
from twinloop.checkpoints.manifest import verify as verify_manifest
from twinloop.checkpoints.manifest import write_manifest
from twinloop.checkpoints.spec import (
    KINDS,
    SPEC_FILE,
    class_for,
    constructor_kwargs,
    read_reward_json,
    reward_document,
    write_reward_json,
)
from twinloop.rewards.base import import_class, setting_names

AUTO_CLASSES = {"sequence_classification": "AutoModelForSequenceClassification",
                "token_classification": "AutoModelForTokenClassification", "causal_lm": "AutoModelForCausalLM"}
PEFT_HEADS = {"SEQ_CLS": "sequence_classification", "TOKEN_CLS": "token_classification", "CAUSAL_LM": "causal_lm"}
PIPELINE_TAGS = {"sequence_classification": "text-classification", "token_classification": "token-classification",
                 "causal_lm": "text-generation"}
META_DIR = "meta_rm"


# ------------------------------------------------------------------------------------------------ sources
def is_zero_checkpoint(folder: Path) -> bool:
    return (folder / "latest").is_file() or any(p.is_dir() for p in folder.glob("global_step*"))


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The folder that holds the model: ``path`` itself, or the last ``checkpoint-N`` of a trainer output."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"checkpoint folder {folder} not found")
    if (folder / "config.json").is_file() or (folder / "adapter_config.json").is_file() or is_zero_checkpoint(folder):
        return folder
    from transformers.trainer_utils import get_last_checkpoint

    last = get_last_checkpoint(str(folder))
    if last is None:
        raise ValueError(f"{folder} holds no model: no config.json, adapter_config.json, DeepSpeed checkpoint "
                         "or checkpoint-N folder")
    return Path(last)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read {path}: {e}") from e


def _head_of(architecture: str | None) -> str:
    for suffix, head in (("ForSequenceClassification", "sequence_classification"),
                         ("ForTokenClassification", "token_classification"), ("ForCausalLM", "causal_lm")):
        if architecture and architecture.endswith(suffix):
            return head
    raise ValueError(f"architecture {architecture!r} is not a sequence classifier, token classifier or causal LM")


def _auto(head: str):
    import transformers

    return getattr(transformers, AUTO_CLASSES[head])


def _torch_dtype(dtype: str):
    import torch

    table = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise ValueError(f"dtype must be one of {sorted(table)}, got {dtype!r}")
    return table[dtype]


def consolidate_zero_checkpoint(folder: str | os.PathLike, head: str, config_dir: str | os.PathLike | None = None):
    """A transformers model holding the fp32 weights of a DeepSpeed ZeRO checkpoint (any stage).

    ``config_dir`` (default ``folder``) supplies config.json. Every parameter must be found, except an output
    embedding tied to the input one.
    """
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from transformers import AutoConfig

    config_dir = Path(config_dir or folder)
    if not (config_dir / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in {config_dir}; a ZeRO checkpoint needs its model config")
    config = AutoConfig.from_pretrained(config_dir)
    state = get_fp32_state_dict_from_zero_checkpoint(str(folder))
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = _auto(head).from_config(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ValueError(f"ZeRO checkpoint {folder} does not match its config: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    model.tie_weights()
    return model.eval()


def _adapter_base(adapter_dir: Path, base_model: str | None) -> Path:
    base = base_model or _read_json(adapter_dir / "adapter_config.json").get("base_model_name_or_path")
    if not base or not Path(base).is_dir():
        raise FileNotFoundError(f"base model {base!r} of adapter {adapter_dir} is not a local folder; "
                                "pass --base-model")
    return Path(base)


def _adapter_head(adapter_dir: Path) -> str:
    task = _read_json(adapter_dir / "adapter_config.json").get("task_type") or "CAUSAL_LM"
    if task not in PEFT_HEADS:
        raise ValueError(f"adapter task_type {task!r} is not one of {sorted(PEFT_HEADS)}")
    return PEFT_HEADS[task]


def _copy_adapter(src: Path, dst: Path) -> None:
    """adapter_config.json + adapter_model.safetensors (a pickled adapter_model.bin is converted)."""
    shutil.copy2(src / "adapter_config.json", dst / "adapter_config.json")
    if (src / "adapter_model.safetensors").is_file():
        shutil.copy2(src / "adapter_model.safetensors", dst / "adapter_model.safetensors")
        return
    if not (src / "adapter_model.bin").is_file():
        raise FileNotFoundError(f"no adapter_model.safetensors in {src}")
    import torch
    from safetensors.torch import save_file

    state = torch.load(src / "adapter_model.bin", map_location="cpu", weights_only=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(dst / "adapter_model.safetensors"))


# ------------------------------------------------------------------------------------------------ model card
def _front_matter(readme: Path) -> dict[str, Any]:
    import yaml

    if not readme.is_file():
        return {}
    text = readme.read_text()
    if not text.startswith("---"):
        return {}
    try:
        data = yaml.safe_load(text.split("---", 2)[1])
    except (yaml.YAMLError, IndexError):
        return {}
    return data if isinstance(data, dict) else {}


def trainer_metrics(folder: Path) -> dict[str, float]:
    """The last logged value of each eval metric and of the training loss in ``trainer_state.json``."""
    path = folder / "trainer_state.json"
    if not path.is_file():
        return {}
    out: dict[str, float] = {}
    for row in _read_json(path).get("log_history", []):
        for key, value in row.items():
            if (key.startswith("eval_") or key in ("loss", "train_loss")) and isinstance(value, (int, float)):
                out[key] = float(value)
    return out


def model_card(spec: dict[str, Any], *, title: str, base_model: str | None, method: str | None,
               data: list[str], metrics: dict[str, float], library: str) -> str:
    """README.md text of an export: front matter (base model, tags, datasets, metrics) and a short body."""
    kind, head = spec["kind"], spec["model"]["head"]
    lo, hi = spec["score_range"]
    summary = [f"A twinloop **{kind}** reward model ({spec['reward_class'].replace(':', '.').rsplit('.', 1)[-1]}).",
               "", f"- base model: {base_model or 'unknown'}", f"- training method: {method or 'unknown'}",
               f"- data: {', '.join(data) if data else 'unknown'}", f"- weights: {spec['model']['weights']}",
               f"- score range: [{lo}, {hi}] (None = unbounded)", "",
               "Load it with `twinloop.build.build_reward(folder)`; `twinloop_reward.json` says how to call it "
               "without twinloop. `twinloop verify folder` checks every file against `manifest.json`."]
    return card.model_card(title=title, summary=summary, library=library, pipeline_tag=PIPELINE_TAGS[head],
                           tags=["twinloop", "reward-model", kind] + ([method.lower()] if method else []),
                           base_model=base_model, datasets=data, metrics=metrics)


# ------------------------------------------------------------------------------------------------ export
class _StubModel:  # enough of an engine/model for the constructors' checks at export time
    config = type("C", (), {"num_labels": 1})()

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer


def construct_reward(cls: type, settings: dict[str, Any], *, engine: Any = None, model: Any = None,
                     tokenizer: Any = None, lora: str | None = None) -> Any:
    """A reward class built from bundle settings and its model objects, by the head it reads: a classifier
    takes ``model=`` + ``tokenizer=`` (or ``engine=``), a causal-LM judge ``engine=`` (+ ``lora=``)."""
    kwargs = constructor_kwargs(settings)
    known = setting_names(cls)
    unknown = sorted(set(kwargs) - set(known) - set(cls.bundle_args))
    if unknown:
        raise ValueError(f"{cls.__name__} has no setting {unknown[0]!r}; settings: {known}")
    try:
        if cls.head == "causal_lm":
            return cls(engine=engine, **({"lora": lora} if lora else {}), **kwargs)
        if engine is not None:
            return cls(engine=engine, **kwargs)
        return cls(model=model, tokenizer=tokenizer, **kwargs)
    except TypeError as e:
        raise ValueError(f"{cls.__name__}: {e}") from e


def _complete_settings(cls: type, given: dict[str, Any] | None, tokenizer: Any) -> dict[str, Any]:
    """The class's settings with its defaults filled in, validated by building the reward on a stand-in model
    so that a bad setting fails at export, not at load."""
    stub = _StubModel(tokenizer)
    built = construct_reward(cls, dict(given or {}), engine=stub if cls.head == "causal_lm" else None,
                             model=stub, tokenizer=tokenizer)
    return built.settings()


def export(checkpoint: str | os.PathLike, out: str | os.PathLike, kind: str, *, merge_lora: bool = False,
           settings: dict[str, Any] | None = None, reward: Any = None, base_model: str | None = None,
           meta_rm: str | os.PathLike | None = None, method: str | None = None, data: list[str] | None = None,
           metrics: dict[str, float] | None = None, overwrite: bool = False, reward_class: Any = None,
           trust_remote_code: bool = False) -> Path:
    """Write the export folder ``out`` from ``checkpoint``; returns ``out``.

    ``settings`` are the reward's constructor keywords (defaults filled in), or read from a live ``reward``
    object. The class is the reward object's, else ``reward_class`` (a class or ``module:Class``; outside
    ``twinloop.`` only with ``trust_remote_code``), else the kind's default. ``meta_rm`` (GRM only) is an
    exported meta-RM folder, copied into ``out/meta_rm``. The folder is written beside ``out`` and renamed into
    place, so a failed export leaves nothing half-written.
    """
    from transformers import AutoTokenizer

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"output folder {out} exists and is not empty (pass overwrite=True / --overwrite)")
    src = resolve_checkpoint(checkpoint)
    adapter = (src / "adapter_config.json").is_file()
    base = _adapter_base(src, base_model) if adapter else None
    config_dir = base if adapter else src
    architecture = (_read_json(config_dir / "config.json").get("architectures") or [None])[0]
    head = _adapter_head(src) if adapter else _head_of(architecture)
    if architecture:  # an adapter's head may differ from its base's (e.g. a SEQ_CLS LoRA on a causal LM)
        head_name = AUTO_CLASSES[head].removeprefix("AutoModelFor")
        architecture = f"{architecture.rsplit('For', 1)[0]}For{head_name}"
    cls = type(reward) if reward is not None else reward_class or class_for(kind, architecture)
    if isinstance(cls, str):
        cls = import_class(cls, trust_remote_code)
    cls_name = cls.__name__
    if kind not in getattr(cls, "kinds", ()):
        raise ValueError(f"a {kind!r} export cannot hold {cls_name} (it is a "
                         f"{' or '.join(getattr(cls, 'kinds', ())) or 'non-model'} reward)")
    if head != cls.head:
        raise ValueError(f"a {kind!r} reward ({cls_name}) needs a {cls.head} model; {src} holds a {head} model")
    if reward is not None:
        settings = reward.settings()
    elif settings is None:
        settings = _source_settings(src, cls)
    tok_dir = src if (src / "tokenizer_config.json").is_file() else config_dir
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    if head == "causal_lm" and not getattr(tokenizer, "chat_template", None) and getattr(cls, "sends_chat", True):
        raise ValueError(f"the tokenizer in {tok_dir} has no chat template; {cls_name} sends chat messages")
    settings = _complete_settings(cls, settings, tokenizer)

    stage = out.parent / f".{out.name}.staging-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        weights = "lora" if adapter and not merge_lora else "full"
        if weights == "lora":
            _copy_adapter(src, stage)
        else:
            model = _build_full_model(src, head, adapter, base)
            if head == "sequence_classification" and model.config.num_labels != 1:
                raise ValueError(f"a scalar {kind!r} RM needs num_labels=1, {src} has {model.config.num_labels}")
            model.save_pretrained(stage)
        tokenizer.save_pretrained(stage)
        meta_ref = None
        if meta_rm is not None:
            meta_ref = _copy_meta_rm(Path(meta_rm), stage, cls)
        card_info = _front_matter(src / "README.md")
        base_name = base_model or (str(base) if base else None) or card_info.get("base_model")
        spec = reward_document(cls, kind, settings, tokenizer, architecture=architecture, weights=weights,
                               base_model=str(base) if base else None, meta_rm=meta_ref)
        spec["manifest"] = "manifest.json"  # an export is always checked against it on load
        write_reward_json(stage, spec)
        tags = [t for t in card_info.get("tags", []) or [] if t not in ("twinloop",)]
        all_metrics = {**trainer_metrics(src), **(metrics or {})}
        (stage / "README.md").write_text(model_card(
            spec, title=out.name, base_model=base_name, method=method or (tags[0] if tags else None),
            data=list(data or []), metrics=all_metrics, library="peft" if weights == "lora" else "transformers"))
        write_manifest(stage)
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(stage, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out


def _build_full_model(src: Path, head: str, adapter: bool, base: Path | None):
    auto = _auto(head)
    if is_zero_checkpoint(src):
        return consolidate_zero_checkpoint(src, head)
    if not adapter:
        return auto.from_pretrained(src, dtype="auto").eval()
    from peft import PeftModel

    extra = {"num_labels": 1} if head == "sequence_classification" else {}
    model = PeftModel.from_pretrained(auto.from_pretrained(base, dtype="auto", **extra), str(src))
    return model.merge_and_unload().eval()


def _copy_meta_rm(meta: Path, stage: Path, cls: type) -> str:
    if "meta_rm" not in getattr(cls, "bundle_args", ()):
        raise ValueError(f"only a GRM export can carry a meta RM, not {cls.__name__}")
    spec = read_reward_json(meta)
    if spec["kind"] != "meta":
        raise ValueError(f"{meta} is a {spec['kind']!r} export; the GRM's meta RM must be a 'meta' export")
    problems = verify_manifest(meta)
    if problems:
        raise ValueError(f"meta RM {meta} fails its manifest: {'; '.join(problems[:3])}")
    shutil.copytree(meta, stage / META_DIR)
    return META_DIR


# ------------------------------------------------------------------------------------------------ import
def read_spec(folder: str | os.PathLike) -> dict[str, Any]:
    """The folder's reward document (an export's or a trainer's: one format)."""
    return read_reward_json(folder)


def _source_settings(src: Path, cls: type) -> dict[str, Any] | None:
    """Settings recorded beside the checkpoint (a trainer's or an earlier export's document), if for this class."""
    if not (src / SPEC_FILE).is_file():
        return None
    try:
        spec = read_spec(src)
    except ValueError:
        return None
    named = spec["reward_class"].replace(":", ".").rsplit(".", 1)[-1]
    return dict(spec["settings"]) if named == cls.__name__ else None


def _require_safetensors(folder: Path, lora: bool) -> None:
    names = ["adapter_model.safetensors"] if lora else ["model.safetensors", "model.safetensors.index.json"]
    if not any((folder / n).is_file() for n in names):
        raise FileNotFoundError(f"{folder} has no safetensors weights ({' or '.join(names)}); twinloop loads "
                                "reward exports from safetensors only")


CLASSIFY_METHODS = {"sequence_classification": "classify", "token_classification": "token_classify"}


def serves_classifier(engine: Any, head: str) -> bool:
    """Whether ``engine`` can score a classifier bundle with this head: it has the pooling call (``classify`` /
    ``token_classify``) and is not a generate-runner vLLM engine (a policy's engine has the method but refuses).
    """
    return hasattr(engine, CLASSIFY_METHODS.get(head, "")) and getattr(engine, "runner", "pooling") == "pooling"


def load_reward(folder: str | os.PathLike, *, engine: Any = None, backend: str = "transformers",
                dtype: str = "float32", base_model: str | None = None, trust_remote_code: bool = False,
                check_manifest: bool = True, engine_kwargs: dict[str, Any] | None = None, **overrides: Any):
    """The Reward object an export folder describes, built with its recorded settings (``overrides`` win).

    Classifier kinds run on ``engine`` only when it pools (``serves_classifier``: a pooling vLLM engine or a
    served classifier); otherwise, e.g. given a policy's generate engine, they read their own weights through
    transformers (``backend="transformers"``) or a vLLM pooling engine (``backend="vllm"``) built here.
    Generative kinds run on ``engine`` when given (a LoRA export then runs as
    an adapter on that engine, which must serve its base model), else on an HFEngine or VLLMEngine built
    here. Weights load from safetensors only; ``trust_remote_code`` stays off unless asked. With
    ``check_manifest`` every file is checked against manifest.json first.
    """
    import torch  # noqa: F401  (transformers needs it anyway; fail early with a clear import error)
    from transformers import AutoTokenizer

    folder = Path(folder)
    spec = read_spec(folder)
    if backend not in ("transformers", "vllm"):
        raise ValueError(f"backend must be 'transformers' or 'vllm', got {backend!r}")
    # an export always has a manifest; a trainer's own output folder (its spec has no format_version) may not
    if check_manifest and (spec.get("manifest") or (folder / "manifest.json").is_file()):
        problems = verify_manifest(folder)
        if problems:
            raise ValueError(f"{folder} fails its manifest check: {'; '.join(problems[:5])}; export it again "
                             "(twinloop export) or copy it again whole")
    cls = import_class(spec["reward_class"], trust_remote_code)
    cls.check_bundle(spec, str(folder / SPEC_FILE))
    kwargs = {**constructor_kwargs(spec["settings"]), **overrides}
    head, lora = spec["model"]["head"], spec["model"]["weights"] == "lora"
    _require_safetensors(folder, lora)
    base = Path(base_model or spec["model"].get("base_model") or "") if lora else None
    if lora and engine is None and not base.is_dir():
        raise FileNotFoundError(f"base model {str(base)!r} of LoRA export {folder} is not a local folder; "
                                "pass base_model=")
    common = dict(dtype=_torch_dtype(dtype), use_safetensors=True, trust_remote_code=trust_remote_code)
    engine_kwargs = dict(engine_kwargs or {})
    if head != "causal_lm":
        if engine is not None and serves_classifier(engine, head):
            return _from_bundle(construct_reward(cls, kwargs, engine=engine), folder, overrides)
        if backend == "vllm":
            if lora:
                raise ValueError("vLLM pooling cannot serve a classifier LoRA; export with --merge-lora")
            pooled = _vllm(folder, "pooling", dtype, trust_remote_code, engine_kwargs)
            return _from_bundle(construct_reward(cls, kwargs, engine=pooled), folder, overrides)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
        if lora:
            from peft import PeftModel

            extra = {"num_labels": 1} if head == "sequence_classification" else {}
            model = PeftModel.from_pretrained(_auto(head).from_pretrained(base, **common, **extra), str(folder))
        else:
            model = _auto(head).from_pretrained(folder, **common)
        return _from_bundle(construct_reward(cls, kwargs, model=model.eval(), tokenizer=tokenizer), folder, overrides)
    adapter = str(folder) if lora else None
    if engine is not None and not lora and _serves_other_model(engine, folder):
        engine = None  # a separate judge model (full weights) never runs on, say, the policy's engine
    if engine is None:
        weights_dir = base if lora else folder
        if backend == "vllm":
            if lora:
                from twinloop.infer.engine import lora_rank

                engine_kwargs.update(enable_lora=True, max_lora_rank=lora_rank(str(folder)), tokenizer=str(folder))
            engine = _vllm(weights_dir, "generate", dtype, trust_remote_code, engine_kwargs)
        else:
            from twinloop.infer.hf_engine import HFEngine

            tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
            model = _auto("causal_lm").from_pretrained(weights_dir, **common)
            engine = HFEngine(model, tokenizer=tokenizer, dtype=dtype)
    meta = spec.get("call", {}).get("meta_rm") if "meta_rm" in getattr(cls, "bundle_args", ()) else None
    if meta and "meta_rm" not in kwargs:
        kwargs["meta_rm"] = load_reward(folder / meta, backend=backend, dtype=dtype, check_manifest=False,
                                        trust_remote_code=trust_remote_code)
    return _from_bundle(construct_reward(cls, kwargs, engine=engine, lora=adapter), folder, overrides)


def _serves_other_model(engine: Any, folder: Path) -> bool:
    """True when ``engine`` visibly serves a local model folder other than ``folder`` (vLLM: its model path;
    transformers: the model's ``name_or_path``); an engine that does not say (a served one) is trusted."""
    model = getattr(engine, "model", None)
    path = model if isinstance(model, str) else getattr(getattr(model, "config", None), "_name_or_path", None)
    if not path or not Path(path).is_dir():
        return False
    return Path(path).resolve() != folder.resolve()


def _from_bundle(reward: Any, folder: Path, overrides: dict[str, Any]) -> Any:
    """A reward loaded as the bundle says names the bundle as its spec (overridden settings: its class spec)."""
    if not overrides:
        reward._bundle = str(folder)
    return reward


def _vllm(folder: Path, runner: str, dtype: str, trust_remote_code: bool, engine_kwargs: dict[str, Any]):
    from twinloop.infer.vllm_engine import VLLMEngine

    config = _read_json(folder / "config.json")
    engine_kwargs.setdefault("max_model_len", min(2048, int(config.get("max_position_embeddings", 2048))))
    if trust_remote_code:
        engine_kwargs["trust_remote_code"] = True
    return VLLMEngine(str(folder), runner=runner, dtype=dtype, **engine_kwargs)
