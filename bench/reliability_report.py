"""One table for issue 19: attacks tried and escapes (as root and as uid 65534), the same attacks'
oracles firing without isolation, parser fuzz cases and exceptions, kills and lost work, server faults
injected and results lost, bad configs tried and their one-line errors.

    python bench/reliability_report.py                 # everything (training kill/resume: minutes)
    python bench/reliability_report.py --skip-train    # the rest in a few minutes
    python bench/reliability_report.py --server-backend vllm   # server faults on real vLLM servers (minutes)

An escape is a hostile program scoring above its honest score, or harm seen after the batch: a process
holding the run's marker, a file written outside, a listener of the caller reached, the hostname
changed, the caller's canary secret in anything that came back, the working tree or /tmp changed.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def _load(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def harm(result: dict) -> list[str]:
    found = [f"stray process {p}" for p in result["stray"]] + [f"written {p}" for p in result["written"]]
    found += [f"/tmp gained {n}" for n in result["tmp_new"]]
    found += [f"{kind} listener reached {n}x" for kind, n in result["hits"].items() if n]
    found += ["working tree changed"] * result["git_changed"] + ["hostname changed"] * result["hostname_changed"]
    return found + ["canary seen"] * result["canary_seen"]


def attack_rows(attacks: Any) -> list[tuple[str, str, str, str]]:
    rows = []
    for mode in ("root", "unprivileged"):
        r = attacks.run_suite(mode)
        over = [name for name, p, o in zip(r["names"], attacks.hostile.PROGRAMS, r["outcomes"])
                if o["passed"] > p["expect"]]
        under = [name for name, p, o in zip(r["names"], attacks.hostile.PROGRAMS, r["outcomes"])
                 if o["passed"] < p["expect"]]
        found = harm(r)
        rows.append((f"attacks, {mode} (uid {r['uid']})", str(len(r["outcomes"])),
                     f"{len(over) + len(found)} escapes", "; ".join(over + found + [f"honest score lost: {u}"
                                                                                    for u in under])[:200]
                     or f"{r['seconds']:.0f} s for the batch"))
        for item in r["completions"]:
            rows.append((f"  hostile completion, {mode}", "1", f"score {item['score']}",
                         f"{item['name']}: {item['seconds']:.2f} s"))
    base = attacks.run_suite("unprivileged", unsafe=True)
    fired = [name for name, o in zip(base["names"], base["outcomes"]) if o["passed"] > 0 and name != "honest control"]
    for path in base["written"]:  # the baseline's own files (its marker is unique): leave nothing behind
        Path(path).unlink(missing_ok=True)
    rows.append(("oracle check: same attacks, NO isolation, uid " + str(base["uid"]),
                 str(len(base["outcomes"]) - 1), f"{len(fired)} fire",
                 "read-only attacks only; shows the suite can fail"))
    return rows


def fuzz_rows(n: int) -> list[tuple[str, str, str, str]]:
    fuzz = _load(REPO / "bench" / "parser_fuzz.py", "parser_fuzz").fuzz(n)
    return [(f"fuzz {name}", str(row["cases"]), f"{row['exceptions']} exceptions, {row['over_cap']} over 5 s",
             f"slowest {row['slowest_s']:.2f} s {row['first']}"[:200]) for name, row in fuzz.items()]


def kill_rows(skip_train: bool, out: Path) -> list[tuple[str, str, str, str]]:
    kr = _load(REPO / "bench" / "kill_resume.py", "kill_resume")
    e = kr.eval_kill_resume(out / "eval")
    rows = [("kill: twinloop eval (SIGKILL, rerun)", str(int(e["killed"])),
             f"{e['missing']} lost, {e['duplicates']} doubled",
             f"{e['rows_before_kill']} rows kept intact={e['kept_intact']}, rerun added {e['added']} of "
             f"{e['expected']}")]
    if skip_train:
        return rows + [("kill: 2-process training", "-", "not run", "--skip-train")]
    t = kr.train_kill_resume(out / "train")
    if "error" in t:
        return rows + [("kill: 2-process training", "-", "ERROR", t["error"][:200])]
    rows.append(("kill: 2-process training (SIGKILL x3)", str(t["kills"]),
                 f"{len(t['incomplete_checkpoints'])} half-written checkpoints",
                 f"final weights match={t['weights_match']} (max |diff| {t['max_abs_weight_gap']:.2e}, "
                 f"rtol 1e-4 atol 1e-5; training moved them {t['reference_moved_from_start']:.2e}); steps redone <= "
                 f"{t['steps_redone_at_most']}; checkpoints past max_steps {len(t['checkpoints_past_max_steps'])}"))
    return rows


def server_rows(backend: str, out: Path) -> list[tuple[str, str, str, str]]:
    r = _load(REPO / "bench" / "server_faults.py", "server_faults").run(backend, out)
    rows = []
    for key, label in (("kill_one_of_two", "kill 1 of 2 servers"), ("hang", "hang the only server (SIGSTOP)"),
                       ("kill_only_then_new_server", "kill the only server, rerun on a new one")):
        x = r[key]
        end = "run finished" if x["rc"] == 0 else f"stopped after {x['seconds_after_fault']} s, rerun rc " \
                                                    f"{x.get('rerun_rc')}"
        rows.append((f"server faults ({backend}): {label}", str(int(x["faulted"])),
                     f"{x['missing']} lost, {x['doubled']} doubled",
                     f"{r['problems']} problems; {end}; error: {x['error'].partition('error: ')[2][:110]}"))
    c = r["concurrency"]
    rows.append((f"server faults ({backend}): {c['clients']} concurrent clients", str(c["completions"]),
                 f"{c['mixed']} mixed up, {len(c['errors'])} errors",
                 f"{c['requests']} requests; {c['drift']} differ from the prompt's lone greedy text"))
    return rows


def bad_config_rows() -> list[tuple[str, str, str, str]]:
    results = _load(REPO / "bench" / "bad_configs.py", "bad_configs").run()
    good = [r for r in results if r["rc"] == 2 and r["error_lines"] == 1 and not r["wrote"]]
    bad = [r["case"] for r in results if r not in good]
    return [("bad configs and inputs (CLI)", str(len(results)), f"{len(good)} one-line errors, "
             f"{sum(r['wrote'] for r in results)} wrote output", "; ".join(bad)[:200] or
             "eval and train: budgets/sizes, recipe keys and types, RM as policy, bundle manifest, remote code")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--fuzz-cases", type=int, default=2000)
    parser.add_argument("--server-backend", choices=["fake", "vllm"], default="fake")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    attacks = _load(REPO / "tests" / "security" / "test_attacks.py", "test_attacks")
    rows = attack_rows(attacks) + fuzz_rows(args.fuzz_cases)
    with tempfile.TemporaryDirectory(prefix="twinloop-kill-") as tmp:
        rows += kill_rows(args.skip_train, Path(tmp))
        rows += server_rows(args.server_backend, Path(tmp) / "servers")
    rows += bad_config_rows()
    head = ("suite", "tried", "result", "details")
    widths = [max(len(r[i]) for r in [*rows, head]) for i in range(3)]
    print(" | ".join(h.ljust(w) for h, w in zip(head, widths)) + " | " + head[3])
    print("-|-".join("-" * w for w in widths) + "-|-" + "-" * 20)
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths)) + " | " + row[3])
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
