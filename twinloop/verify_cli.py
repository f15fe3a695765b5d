"""`twinloop verify OUT`: check every file of an export against its manifest.json (sha256 and size).

Exit status 0 when every file matches, 1 when a file is missing, truncated, altered or unlisted (each named).
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="an export folder written by `twinloop export`")


def run(args: argparse.Namespace) -> int:
    from twinloop.checkpoints.manifest import verify

    problems = verify(args.folder)
    for line in problems:
        print(f"FAILED {line}")
    if problems:
        print(f"{args.folder}: {len(problems)} problem(s)")
        return 1
    print(f"{args.folder}: OK, every file matches manifest.json")
    return 0
