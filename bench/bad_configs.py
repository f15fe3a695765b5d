"""Bad configs and inputs through the real CLI (issue 19, section 6): each case must exit 2 with exactly one
error line and leave its output folder unwritten. Prints one line per case and a count.

    python bench/bad_configs.py
"""
from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
POLICY = REPO / "checkpoints" / "tiny-arith-policy"


def _scalar_rm(folder: Path) -> Path:
    folder.mkdir()
    config = json.loads((POLICY / "config.json").read_text())
    config["architectures"] = [config["architectures"][0].replace("ForCausalLM", "ForSequenceClassification")]
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _broken_bundle(folder: Path) -> Path:
    from twinloop.checkpoints.manifest import write_manifest

    folder.mkdir()
    (folder / "twinloop_reward.json").write_text(json.dumps({
        "format_version": 2, "kind": "orm", "reward_class": "twinloop.rewards.scalar:ScalarRM", "settings": {},
        "model": {"head": "sequence_classification"}, "manifest": "manifest.json"}))
    (folder / "model.safetensors").write_bytes(b"0123456789")
    write_manifest(folder)
    (folder / "model.safetensors").write_bytes(b"0123456780")
    return folder


def cases(tmp: Path) -> list[tuple[str, list[str]]]:
    """(name, argv without the output flag); ``{out}`` in an argv is the case's output folder."""
    rm, bundle = _scalar_rm(tmp / "rm"), _broken_bundle(tmp / "bundle")

    def recipe(name: str, text: str) -> str:
        path = tmp / f"{name}.yaml"
        path.write_text(text)
        return str(path)

    ev = ["eval", "--checkpoint", str(POLICY), "--task", "arith", "--methods", "greedy", "--budgets", "1",
          "--n_problems", "2", "--engine", "hf", "--no_plot", "--out", "{out}"]

    def with_(argv: list[str], flag: str, value: str) -> list[str]:
        argv = list(argv)
        argv[argv.index(flag) + 1] = value
        return argv

    tr = ["train", "gppo", "--output_dir", "{out}", "--config"]
    return [
        ("eval --n_problems 0", with_(ev, "--n_problems", "0")),
        ("eval --budgets 0", with_(ev, "--budgets", "0")),
        ("eval --budgets 4,x", with_(ev, "--budgets", "4,x")),
        ("eval --batch 0", ev + ["--batch", "0"]),
        ("eval --batch abc", ev + ["--batch", "abc"]),
        ("eval --methods ,", with_(ev, "--methods", ",")),
        ("eval unknown method", with_(ev, "--methods", "greedy,nosuch")),
        ("eval missing checkpoint", with_(ev, "--checkpoint", str(tmp / "nowhere"))),
        ("eval scalar RM as the policy", with_(ev, "--checkpoint", str(rm))),
        ("eval policy as the reward", ev + ["--reward", str(POLICY)]),
        ("eval reward outside twinloop", ev + ["--reward", "collections:Counter"]),
        ("eval bundle failing its manifest", ev + ["--reward", str(bundle)]),
        ("eval recipe unknown key", with_(ev, "--methods", "greedy") + ["--recipe", recipe(
            "e1", "task: arith\nreward: none\ntrain: {}\neval: {budgetz: [4]}\n")]),
        ("eval recipe wrong type", ev + ["--recipe", recipe("e2", "task: arith\ntrain: {}\neval: {batch: [1]}\n")]),
        ("train unknown key", tr + [recipe("t1", "max_stepz: 3\n")]),
        ("train wrong type (str)", tr + [recipe("t2", "max_steps: abc\n")]),
        ("train wrong type (list)", tr + [recipe("t3", "max_steps: [1, 2]\n")]),
        ("train float for an int", tr + [recipe("t4", "max_steps: 2.5\n")]),
        ("train unknown flag", tr + [str(REPO / "recipes" / "arith" / "process.yaml"), "--max_stepz", "3"]),
        ("train train_size 0", tr + [recipe("t5", "train_size: 0\n")]),
        ("train missing model", tr + [recipe("t6", f"model_name_or_path: {tmp / 'nowhere'}\n")]),
        ("train scalar RM as the policy", tr + [recipe("t7", f"model_name_or_path: {rm}\n")]),
        ("train reward outside twinloop", tr + [recipe("t8", "reward_funcs: ['collections:Counter']\n")]),
        ("train bundle failing its manifest", tr + [recipe("t9", f"reward_funcs: ['{bundle}']\n")]),
        ("train orm: scalar RM as the policy", ["train", "orm", "--output_dir", "{out}", "--config",
                                                recipe("t10", f"policy_dir: {rm}\n")]),
    ]


def run() -> list[dict[str, Any]]:
    from twinloop.cli import main as cli

    out = []
    with tempfile.TemporaryDirectory(prefix="twinloop-bad-") as tmp:
        tmp = Path(tmp)
        for i, (name, argv) in enumerate(cases(tmp)):
            folder = tmp / f"out-{i}"
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    rc = cli([str(folder) if a == "{out}" else a for a in argv])
                except SystemExit as e:  # a usage dump would end here
                    rc = e.code
            lines = [x for x in err.getvalue().splitlines() if "error" in x.lower()]
            out.append({"case": name, "rc": rc, "error_lines": len(lines), "wrote": folder.exists(),
                        "error": lines[0] if lines else err.getvalue()[-300:]})
    return out


def main() -> None:
    results = run()
    for r in results:
        print(f"{r['case']:38s} rc={r['rc']} lines={r['error_lines']} wrote={r['wrote']} | {r['error'][:160]}")
    good = sum(r["rc"] == 2 and r["error_lines"] == 1 and not r["wrote"] for r in results)
    print(f"{good} of {len(results)} bad inputs gave one error line and wrote nothing")


if __name__ == "__main__":
    main()
