"""`twinloop <command>`: each command is a thin call into a package module.

Every command module exposes ``add_arguments(parser)`` and ``run(args) -> int`` (or, with
``PARSES_ITS_OWN_ARGV``, ``main(argv) -> int`` reading a dataclass config); modules are imported
only when their command runs, so ``twinloop --help`` stays fast and vLLM stays unimported.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# command name -> (module, one-line help). The one plain dict the CLI needs.
COMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": ("twinloop.quickstart", "run the default job: search on the shipped tiny policy"),
    "smoke": ("twinloop.smoke", "engine smoke run on a tiny model built on the fly"),
    "tinyworld": ("twinloop.tinyworld", "build the tiny arithmetic policy shipped in checkpoints/"),
    "import-gguf": ("twinloop.gguf", "convert SmolLM2-135M-Instruct (GGUF) to a safetensors folder"),
    "export": ("twinloop.export_cli",
               "export a trained reward model as a Hugging Face folder with twinloop_reward.json"),
    "verify": ("twinloop.verify_cli", "check an export's files against its manifest.json (sha256)"),
    "serve-reward": ("twinloop.serve_reward_cli", "serve an exported reward over HTTP on 127.0.0.1"),
    "eval": ("twinloop.eval_cli", "run search procedures on a task at several budgets (JSONL, table, plot)"),
    "ttt": ("twinloop.ttt_cli", "answer a long-context task with exact qTTT (query-only test-time training)"),
    "train": ("twinloop.cli", "train a policy or reward model: `twinloop train METHOD --config RECIPE.yaml`"),
}

# `twinloop train METHOD ...` -> the trainer module (each runs under `accelerate launch -m` too)
TRAINERS: dict[str, str] = {
    "gppo": "twinloop.train.gppo",
    "orm": "twinloop.train.orm",
    "prm": "twinloop.train.prm",
    "selfeval": "twinloop.train.selfeval",
    "ctrl": "twinloop.train.ctrl",
    "spct": "twinloop.train.spct",
    "pairrl": "twinloop.train.pairrl",
    "pairrl-warmup": "twinloop.train.pairrl_warmup",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("method", choices=sorted(TRAINERS))
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="--config RECIPE.yaml and config flags")


def run(args: argparse.Namespace) -> int:
    trainer = importlib.import_module(TRAINERS[args.method])
    return int(trainer.main(args.rest) or 0)


def _load(name: str):
    module, _ = COMMANDS[name]
    return importlib.import_module(module)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="twinloop", description="training-and-inference co-design for LLM reasoning")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            parser.error(f"unknown command {argv[0]!r}; choose from {', '.join(COMMANDS)}")
        parser.print_help()
        return 0
    name = argv[0]
    module = _load(name)
    if getattr(module, "PARSES_ITS_OWN_ARGV", False):  # a dataclass config read by HfArgumentParser
        args = argv[1:]
    else:
        cmd = argparse.ArgumentParser(prog=f"twinloop {name}", description=COMMANDS[name][1])
        module.add_arguments(cmd)
        args = cmd.parse_args(argv[1:])
    try:
        return int(module.main(args) if isinstance(args, list) else module.run(args) or 0)
    except (FileNotFoundError, ValueError, RuntimeError) as e:  # user errors (EngineError too): one line
        print(f"twinloop {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"twinloop {name}: interrupted; results already written stay on disk", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
