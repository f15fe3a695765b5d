"""`twinloop serve-reward OUT --port P`: an HTTP scoring endpoint on 127.0.0.1 for an exported reward.

    twinloop serve-reward exports/orm-arith --port 8123 &
    curl -s http://127.0.0.1:8123/score -H 'Content-Type: application/json' \
         -d '{"prompts": ["What is 2 + 3?"], "completions": ["2 + 3 = 5\n\nAnswer: \\boxed{5}"]}'
    # -> {"scores": [2.638...]}   (a raw logit; `sigmoid=true` exports give (0, 1))

Endpoints and error behaviour: twinloop.checkpoints.serve. The reward runs on the vLLM engine by default
(pooling for classifiers, generation for GRM/pairwise/probe PRMs); ``--backend transformers`` needs no vLLM.
"""
from __future__ import annotations

import argparse
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="an export folder written by `twinloop export`")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    parser.add_argument("--backend", choices=("vllm", "transformers"), default="vllm")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                        help="weights dtype; vLLM's auto serves fp32 checkpoints in 16-bit, so pass float32 to "
                             "match transformers fp32 scores")
    parser.add_argument("--base-model", help="base model folder of a LoRA export (default: the one recorded)")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="allow model code and a reward class outside twinloop")
    parser.add_argument("--no-verify", action="store_true", help="skip the manifest check at start-up")


def run(args: argparse.Namespace) -> int:
    from twinloop.build import build_reward
    from twinloop.checkpoints.export import read_spec
    from twinloop.checkpoints.serve import make_server

    spec = read_spec(args.folder)
    reward = build_reward(args.folder, backend=args.backend, dtype=args.dtype, base_model=args.base_model,
                          trust_remote_code=args.trust_remote_code, check_manifest=not args.no_verify)
    try:
        server = make_server(reward, spec, args.host, args.port)
    except OSError as e:
        raise RuntimeError(f"cannot listen on {args.host}:{args.port}: {e}") from e
    print(f"serving {spec['kind']} reward {args.folder} on {server.url} (pid {os.getpid()})", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        engine = getattr(reward, "engine", None)
        if engine is not None and hasattr(engine, "close"):
            engine.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m twinloop.serve_reward_cli OUT --port P`` (the same as ``twinloop serve-reward``)."""
    parser = argparse.ArgumentParser(prog="twinloop serve-reward", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"twinloop serve-reward: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
