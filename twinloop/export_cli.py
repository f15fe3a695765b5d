"""`twinloop export`: a trained reward model to a Hugging Face folder with twinloop_reward.json and a manifest.

    twinloop export --checkpoint runs/orm/rm --kind orm --out exports/orm-arith [--merge-lora]
        [--setting aggregation=min] [--meta-rm exports/meta] [--method ORM] [--data arith] [--metric acc=0.8]
"""
from __future__ import annotations

import argparse
import json


def _key_value(text: str) -> tuple[str, object]:
    """KEY=VALUE with VALUE read as JSON when it parses (numbers, true/false, null, quoted strings)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from twinloop.checkpoints.spec import KINDS

    parser.add_argument("--checkpoint", required=True,
                        help="HF model folder, peft adapter, trainer output (last checkpoint-N) or DeepSpeed "
                             "ZeRO checkpoint")
    parser.add_argument("--kind", required=True, choices=KINDS)
    parser.add_argument("--reward", help="the reward class, as a spec (alias such as prm_probe, or module:Class); "
                                         "default: the kind's own")
    parser.add_argument("--trust-remote-code", action="store_true", help="allow a reward class outside twinloop")
    parser.add_argument("--out", required=True, help="export folder to write (must be absent or empty)")
    parser.add_argument("--merge-lora", action="store_true", help="merge a LoRA adapter into its base model")
    parser.add_argument("--base-model", help="base model folder of a LoRA adapter (default: from adapter_config.json)")
    parser.add_argument("--setting", action="append", type=_key_value, default=[], metavar="KEY=VALUE",
                        help="reward constructor setting, e.g. aggregation=min, k=8, sigmoid=true (repeatable)")
    parser.add_argument("--meta-rm", help="an exported 'meta' folder to ship with a GRM (copied into OUT/meta_rm)")
    parser.add_argument("--method", help="training method for the model card (default: from the checkpoint's card)")
    parser.add_argument("--data", action="append", default=[], help="training data for the model card (repeatable)")
    parser.add_argument("--metric", action="append", type=_key_value, default=[], metavar="NAME=VALUE",
                        help="metric for the model card (repeatable; eval_* metrics of trainer_state.json are added)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")


def run(args: argparse.Namespace) -> int:
    from twinloop.checkpoints.export import export, read_spec

    metrics = {}
    for name, value in args.metric:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"--metric {name}={value!r}: the value must be a number")
        metrics[name] = float(value)
    from twinloop.build import parse_reward_spec, reward_class

    cls = reward_class(args.reward, args.trust_remote_code) if args.reward else None
    given = dict(parse_reward_spec(args.reward).kwargs) if args.reward else {}
    settings = {**given, **dict(args.setting)} or None
    out = export(args.checkpoint, args.out, args.kind, merge_lora=args.merge_lora, settings=settings,
                 base_model=args.base_model, meta_rm=args.meta_rm, method=args.method, data=args.data,
                 metrics=metrics, overwrite=args.overwrite, reward_class=cls,
                 trust_remote_code=args.trust_remote_code)
    spec = read_spec(out)
    print(f"exported {spec['kind']} ({spec['spec']}, {spec['model']['weights']} weights) "
          f"to {out}")
    return 0
