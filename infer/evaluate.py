"""`twinloop eval`: run search procedures at several budgets on a task; write one JSONL row per problem
and budget (resumable: a rerun skips finished rows, every row is flushed as soon as its batch ends),
print a summary table and draw accuracy against generated tokens.

    twinloop eval --checkpoint checkpoints/tiny-arith-policy --task arith --method greedy,majority,best_of_n \
        --budgets 4,8,16,32 --reward arith_process --n-problems 50

Several engines shard the problems (``--servers URL,URL`` of running vLLM servers); all shards append to
the same JSONL. Methods are the module names under ``twinloop.infer.search``.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import pkgutil
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from twinloop.infer.search.common import Budget, Problem, SearchResult

SEARCH_PACKAGE = "twinloop.infer.search"
NOT_PROCEDURES = {"common", "stepper", "sampling", "paths", "tree", "particles", "resampling"}
BUDGET_FREE = {"greedy"}  # one sample whatever the budget
DEFAULTS: dict[str, Any] = {
    "checkpoint": None, "task": "arith", "split": "test", "methods": "greedy,majority,best_of_n",
    "budgets": "4,8,16,32", "reward": None, "n_problems": None, "out": None, "batch": 32, "temperature": 0.7,
    "max_tokens": 512, "engine": "vllm", "servers": None, "dtype": "float32", "max_model_len": None, "seed": 0,
    "max_generated_tokens": None, "max_rm_calls": None, "set": None, "no_plot": False, "tokenizer": None,
}
SETTINGS = ("checkpoint", "tokenizer", "task", "split", "temperature", "max_tokens", "reward", "set",
            "max_generated_tokens", "max_rm_calls")  # a results file is only resumed under the same values of these


# ------------------------------------------------------------------------------------------ methods
def procedures() -> list[str]:
    pkg = importlib.import_module(SEARCH_PACKAGE)
    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name not in NOT_PROCEDURES)


def load_procedure(name: str):
    known = procedures()
    if name not in known:
        raise ValueError(f"unknown search method {name!r}; choose from {', '.join(known)}")
    return importlib.import_module(f"{SEARCH_PACKAGE}.{name}")


def parse_value(text: str) -> Any:
    """A --set value: JSON when it parses (numbers, true/false, null, lists), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def build_config(module: Any, temperature: float, max_tokens: int, seed: int, overrides: dict[str, Any]):
    cls = module.Config
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        name = module.__name__.rsplit(".", 1)[-1]
        raise ValueError(f"{name} has no setting {unknown[0]!r}; settings: {sorted(names)}")
    return cls(temperature=temperature, max_tokens=max_tokens, seed=seed, **overrides)


# ---------------------------------------------------------------------------------- tasks and rewards
def task_module(task: str):
    name = task.split(":", 1)[0]
    try:
        return importlib.import_module(f"twinloop.tasks.{name}")
    except ModuleNotFoundError as e:
        raise ValueError(f"unknown task {task!r}; tasks live in twinloop/tasks/ "
                         "(arith, gsm8k, mmath, humaneval, rgym:NAME)") from e


def load_rows(task: str, split: str, n: int | None) -> list[dict[str, Any]]:
    mod = task_module(task)
    if ":" in task:  # reasoning-gym: rgym:countdown
        return mod.load(task.split(":", 1)[1], split=split, n=n)
    return mod.load(split=split, n=n)


def task_reward(task: str):
    """The task's own verifiable reward (the correctness judge)."""
    mod = task_module(task)
    if ":" in task:
        return mod.reward(task.split(":", 1)[1])
    if hasattr(mod, "reward"):
        return mod.reward()
    if task == "arith":
        return mod.ArithOutcomeReward()
    raise ValueError(f"task {task!r} has no reward() to judge answers")


SELF_REWARDS = ("pairwise", "grm", "selfeval")  # judged by the policy model itself (optionally :ADAPTER)


def build_reward(spec: str | None, task: str, engine: Any = None):
    """``arith_process`` (exact PRM), ``arith_outcome`` / ``task`` (gold oracles), ``none``, a reward
    bundle folder (twinloop.checkpoints.export.load_reward), or a judge run on the policy engine:
    ``pairwise`` (V1 verifier), ``grm`` (SPCT GRM), ``selfeval`` (self-evaluation probe), each with an
    optional LoRA adapter as ``NAME:ADAPTER_DIR``."""
    if spec is None or spec == "none":
        return None
    if spec in ("arith_process", "arith_outcome"):
        from twinloop.tasks import arith

        return arith.ArithProcessReward() if spec == "arith_process" else arith.ArithOutcomeReward()
    if spec == "task":
        return task_reward(task)
    if spec.partition(":")[0] in NO_ORACLE_REWARDS:
        return no_oracle_reward(spec, engine)
    kind, _, adapter = spec.partition(":")
    if kind in SELF_REWARDS:
        if adapter and not Path(adapter).is_dir():
            raise FileNotFoundError(f"LoRA adapter folder {adapter} not found")
        if engine is None:  # validation only
            return None
        lora = adapter or None
        if kind == "pairwise":
            from twinloop.rewards.pairwise import PairwiseVerifier

            return PairwiseVerifier(engine, lora=lora)
        if kind == "grm":
            from twinloop.rewards.generative import GenerativeReward

            return GenerativeReward(engine, lora=lora, mode="group")
        from twinloop.rewards.selfeval import SelfEvalProbe, probe_settings

        return SelfEvalProbe(engine, lora=lora, **probe_settings(lora))
    if Path(spec).is_dir():
        try:
            from twinloop.checkpoints.export import load_reward
        except ImportError as e:
            raise ValueError("loading a reward bundle needs twinloop.checkpoints.export.load_reward") from e
        return load_reward(spec)
    raise ValueError(f"unknown reward {spec!r}: use arith_process, arith_outcome, task, none, pairwise, grm, "
                     "selfeval or a bundle folder")


NO_ORACLE_REWARDS = ("recompute", "operands", "recompute+operands")  # arithmetic, no gold answer anywhere


def no_oracle_reward(spec: str, engine: Any = None):
    """``recompute`` (the policy engine re-derives each step by another route), ``operands`` (operand
    consistency), ``recompute+operands`` (min of both per step); ``:expected`` scores agreement by the
    route's probability. Arithmetic only for now."""
    from twinloop.tasks import arith_routes

    kind, _, option = spec.partition(":")
    if option not in ("", "expected"):
        raise ValueError(f"unknown option {option!r} in reward {spec!r}; the only one is :expected")
    if kind == "operands":
        return arith_routes.operands_reward()
    if engine is None:  # validation only
        return None
    settings = {"expected": option == "expected"}
    if kind == "recompute":
        return arith_routes.recompute_reward(engine, **settings)
    return arith_routes.recompute_operands_reward(engine, **settings)


def make_judge(task: str) -> Callable[[Problem, str | None], bool]:
    """answer -> correct, through the task's reward on ``\\boxed{answer}`` (None is wrong)."""
    reward = task_reward(task)

    def judge(problem: Problem, answer: str | None) -> bool:
        if answer is None:
            return False
        cols = {k: [v] for k, v in problem.columns.items()}
        score = reward([problem.prompt], ["\\boxed{" + str(answer) + "}"], **cols)[0]
        return score is not None and score >= 0.5

    return judge


def to_problems(rows: Sequence[dict[str, Any]]) -> list[Problem]:
    """Rows to Problems; the worked ``solution`` is not forwarded to rewards."""
    out = []
    for i, row in enumerate(rows):
        if "prompt" not in row:
            raise ValueError(f"task row {i} has no 'prompt' field")
        cols = {k: v for k, v in row.items() if k not in ("prompt", "solution", "id")}
        out.append(Problem(prompt=row["prompt"], columns=cols, id=str(row.get("id", i))))
    return out


# ------------------------------------------------------------------------------------------ running
def result_row(method: str, n: int, problem: Problem, res: SearchResult, correct: bool, shard: int) -> dict[str, Any]:
    u = res.usage
    return {"method": method, "budget": n, "problem_id": problem.id, "correct": bool(correct), "answer": res.answer,
            "gold": problem.columns.get("answer"), "generated_tokens": u.generated_tokens,
            "prompt_tokens": u.prompt_tokens, "cached_prompt_tokens": u.cached_prompt_tokens, "rm_calls": u.rm_calls,
            "rm_tokens": u.rm_tokens, "wall_seconds": round(u.wall_seconds, 4),
            "budget_exhausted": res.budget_exhausted,
            "stop_reason": res.stop_reason, "n_candidates": len(res.candidates), "shard": shard}


def finished_keys(path: Path) -> set[tuple[str, int, str]]:
    """Keys of complete rows already written; a torn last line (crash mid-write) is ignored."""
    keys = set()
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
                keys.add((r["method"], int(r["budget"]), str(r["problem_id"])))
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return keys


def end_torn_line(path: Path) -> None:
    """A crash mid-write leaves a line without its newline: end it so the next row starts clean."""
    if path.exists() and path.stat().st_size:
        with path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
        if torn:
            with path.open("a") as f:
                f.write("\n")


def evaluate(problems: Sequence[Problem], engines: Sequence[Any], methods: Sequence[str], budgets: Sequence[int],
             out_path: Path, judge: Callable[[Problem, str | None], bool], reward_factory: Callable[[Any], Any],
             config_for: Callable[[Any], Any], batch: int = 32, caps: dict[str, int | None] | None = None,
             progress: bool = True) -> int:
    """Run every (method, budget) on every problem not yet in ``out_path``; returns rows written.

    Problems are split into batches; batches are spread over ``engines`` (one thread per engine, each with
    its own reward object, built on that engine, so usage deltas stay exact). Each finished batch is
    appended and flushed.
    """
    from tqdm import tqdm

    caps = caps or {}
    done = finished_keys(out_path)
    jobs: list[tuple[str, int, list[Problem]]] = []
    for method in methods:
        load_procedure(method)  # unknown names fail before any work
        for n in ([1] if method in BUDGET_FREE else budgets):
            todo = [p for p in problems if (method, n, p.id) not in done]
            jobs += [(method, n, todo[i:i + batch]) for i in range(0, len(todo), batch)]
    total = sum(len(j[2]) for j in jobs)
    if not total:
        return 0
    out_path.parent.mkdir(parents=True, exist_ok=True)
    end_torn_line(out_path)
    lock = threading.Lock()
    bar = tqdm(total=total, desc="eval", unit="problem", disable=not progress)
    written = [0]

    def shard_worker(shard: int) -> None:
        engine = engines[shard]
        reward = reward_factory(engine)
        for method, n, chunk in jobs[shard::len(engines)]:
            module = load_procedure(method)
            budget = Budget(n=n, generated_tokens=caps.get("generated_tokens"), rm_calls=caps.get("rm_calls"))
            results = module.run(chunk, engine, reward, budget, config_for(module))
            rows = [result_row(method, n, p, r, judge(p, r.answer), shard) for p, r in zip(chunk, results)]
            with lock:
                with out_path.open("a") as f:
                    for row in rows:
                        f.write(json.dumps(row) + "\n")
                        f.flush()
                    os.fsync(f.fileno())
                written[0] += len(rows)
                bar.update(len(rows))

    try:
        if len(engines) == 1:
            shard_worker(0)
        else:
            with ThreadPoolExecutor(len(engines)) as pool:
                for fut in [pool.submit(shard_worker, s) for s in range(len(engines))]:
                    fut.result()
    finally:
        bar.close()
    return written[0]


# ------------------------------------------------------------------------------------------ reporting
def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (method, budget): problems, accuracy, mean generated tokens, mean RM calls, wall seconds."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["method"], int(r["budget"]))].append(r)
    out = []
    for (method, n), rs in sorted(groups.items()):
        k = len(rs)
        out.append({"method": method, "budget": n, "problems": k, "accuracy": sum(r["correct"] for r in rs) / k,
                    "generated_tokens": sum(r["generated_tokens"] for r in rs) / k,
                    "rm_calls": sum(r["rm_calls"] for r in rs) / k,
                    "wall_seconds": sum(r["wall_seconds"] for r in rs),
                    "exhausted": sum(bool(r["budget_exhausted"]) for r in rs) / k})
    return out


def format_table(summary: Sequence[dict[str, Any]]) -> str:
    """The summary as a text table; with greedy in the run, a column of accuracy gained over it."""
    greedy = next((s["accuracy"] for s in summary if s["method"] == "greedy"), None)
    head = f"{'method':<18} {'N':>4} {'probs':>5} {'accuracy':>8} {'gen tok':>9} {'RM calls':>8} {'wall s':>8}"
    head += f" {'vs greedy':>9}" if greedy is not None else ""
    lines = [head, "-" * len(head)]
    for s in summary:
        line = (f"{s['method']:<18} {s['budget']:>4} {s['problems']:>5} {s['accuracy']:>8.3f} "
                f"{s['generated_tokens']:>9.1f} {s['rm_calls']:>8.1f} {s['wall_seconds']:>8.1f}")
        lines.append(line + (f" {s['accuracy'] - greedy:>+9.3f}" if greedy is not None else ""))
    return "\n".join(lines)


def tokens_to_reach(summary: Sequence[dict[str, Any]], method: str = "best_of_n", budget: int = 32) -> dict[str, Any]:
    """Per method, the fewest mean generated tokens at which its accuracy reaches ``method@budget``'s
    (None when no budget of it does), and that as a fraction of the reference's tokens."""
    ref = next((s for s in summary if s["method"] == method and s["budget"] == budget), None)
    if ref is None:
        return {}
    out: dict[str, Any] = {"reference": f"{method}@{budget}", "accuracy": ref["accuracy"],
                           "generated_tokens": ref["generated_tokens"], "methods": {}}
    for name in sorted({s["method"] for s in summary}):
        hits = [s for s in summary if s["method"] == name and s["accuracy"] >= ref["accuracy"] - 1e-12]
        best = min(hits, key=lambda s: s["generated_tokens"]) if hits else None
        out["methods"][name] = None if best is None else {
            "budget": best["budget"], "generated_tokens": best["generated_tokens"],
            "fraction": best["generated_tokens"] / ref["generated_tokens"] if ref["generated_tokens"] else None}
    return out


def format_reach(reach: dict[str, Any]) -> str:
    if not reach:
        return ""
    title = (f"tokens to reach {reach['reference']} accuracy {reach['accuracy']:.3f} "
             f"({reach['generated_tokens']:.1f} tokens):")
    lines = [title]
    for name, hit in reach["methods"].items():
        lines.append(f"  {name:<18} " + ("never" if hit is None else
                                         f"N={hit['budget']:<4} {hit['generated_tokens']:>9.1f} tokens "
                                         f"({hit['fraction']:.2f}x)"))
    return "\n".join(lines)


def plot(summary: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """Accuracy against mean generated tokens per problem, one line per method, points labelled by N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    by_method: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in summary:
        by_method[s["method"]].append(s)
    for method, pts in sorted(by_method.items()):
        pts = sorted(pts, key=lambda s: s["generated_tokens"])
        xs, ys = [p["generated_tokens"] for p in pts], [p["accuracy"] for p in pts]
        ax.plot(xs, ys, marker="o", label=method)
        for p in pts:
            ax.annotate(str(p["budget"]), (p["generated_tokens"], p["accuracy"]), fontsize=7,
                        textcoords="offset points", xytext=(3, 3))
    ax.set_xscale("log")
    ax.set_xlabel("generated tokens per problem (mean)")
    ax.set_ylabel("accuracy")
    ax.set_title(title or "accuracy vs generated tokens")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def read_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


# ------------------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    a = parser.add_argument
    a("--checkpoint", help="policy model folder (Hugging Face format)")
    a("--task", help="arith, gsm8k, mmath, humaneval or rgym:NAME (default arith)")
    a("--split", help="task split (default test)")
    a("--method", "--methods", dest="methods", help="comma list of search methods (default greedy,majority,best_of_n)")
    a("--budgets", help="comma list of nominal N (default 4,8,16,32)")
    a("--reward", help="arith_process | arith_outcome | task | none | reward bundle folder")
    a("--n-problems", type=int, help="first N problems of the split")
    a("--out", help="output folder (default runs/eval-TASK); results.jsonl there is resumed")
    a("--batch", type=int, help="problems per engine batch (default 32)")
    a("--temperature", type=float, help="sampling temperature (default 0.7)")
    a("--max-tokens", type=int, help="max generated tokens per candidate (default 512)")
    a("--max-generated-tokens", type=int, help="per-problem cap on generated tokens")
    a("--max-rm-calls", type=int, help="per-problem cap on reward-model calls")
    a("--set", action="append", metavar="KEY=VALUE", help="procedure setting, e.g. --set width=4 (repeatable)")
    a("--engine", choices=["vllm", "hf"], help="offline engine when no --servers (default vllm)")
    a("--servers", help="comma list of vLLM server URLs to shard over (OpenAI-compatible)")
    a("--tokenizer", help="tokenizer folder, when it is not the checkpoint's own")
    a("--dtype", help="model dtype (default float32)")
    a("--max-model-len", type=int, help="engine context length (default: the model's, at most 4096)")
    a("--seed", type=int, help="engine and procedure seed (default 0)")
    a("--recipe", help="YAML file with any of these options; flags given on the command line win")
    a("--no-plot", action="store_true", default=None, help="skip the PNG")


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults < recipe YAML < command-line flags."""
    opts = dict(DEFAULTS)
    if getattr(args, "recipe", None):
        import yaml

        path = Path(args.recipe)
        if not path.is_file():
            raise FileNotFoundError(f"recipe {path} not found")
        data = yaml.safe_load(path.read_text()) or {}
        data = {k.replace("-", "_"): v for k, v in data.items()}
        if "method" in data:
            data["methods"] = data.pop("method")
        unknown = sorted(set(data) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"recipe {path} has unknown key {unknown[0]!r}")
        opts.update(data)
    for k in DEFAULTS:
        v = getattr(args, k, None)
        if v is not None:
            opts[k] = v
    for k in ("methods", "budgets"):
        if isinstance(opts[k], (list, tuple)):
            opts[k] = ",".join(str(x) for x in opts[k])
    if isinstance(opts["set"], dict):
        opts["set"] = [f"{k}={json.dumps(v)}" for k, v in opts["set"].items()]
    return opts


def parse_sets(items: Sequence[str] | None) -> dict[str, Any]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set wants KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = parse_value(v.strip())
    return out


def build_engines(opts: dict[str, Any]) -> list[Any]:
    ckpt = opts["checkpoint"]
    if not ckpt:
        raise ValueError("--checkpoint is required (the policy model folder)")
    if not Path(ckpt).is_dir():
        raise FileNotFoundError(f"checkpoint folder {ckpt} not found")
    if opts["servers"]:
        from twinloop.infer.openai_engine import OpenAIEngine

        tok = opts["tokenizer"] or ckpt
        return [OpenAIEngine(url.strip(), tokenizer=tok) for url in str(opts["servers"]).split(",") if url.strip()]
    if opts["engine"] == "hf":
        from transformers import AutoTokenizer
        from twinloop.infer.hf_engine import HFEngine

        tok = AutoTokenizer.from_pretrained(opts["tokenizer"]) if opts["tokenizer"] else None
        return [HFEngine(ckpt, tokenizer=tok, dtype=opts["dtype"])]
    from twinloop.infer.vllm_engine import VLLMEngine

    kind, _, adapter = str(opts.get("reward") or "").partition(":")
    lora = {"enable_lora": True, "max_lora_rank": lora_rank(adapter)} if kind in SELF_REWARDS and adapter else {}
    return [VLLMEngine(ckpt, dtype=opts["dtype"], max_model_len=opts["max_model_len"] or model_context(ckpt),
                       seed=opts["seed"], enable_prefix_caching=True, tokenizer=opts["tokenizer"], **lora)]


def lora_rank(adapter: str, floor: int = 8) -> int:
    """The engine's max LoRA rank for an adapter folder: its own ``r`` (vLLM wants one of 8, 16, 32, ...)."""
    try:
        r = int(json.loads((Path(adapter) / "adapter_config.json").read_text()).get("r", floor))
    except (OSError, ValueError):
        r = floor
    return max(floor, 1 << (r - 1).bit_length())


def model_context(folder: str, cap: int = 4096) -> int:
    """The model's own context length (max_position_embeddings), capped: the engine's default length."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return 2048
    return int(min(cap, config.get("max_position_embeddings") or 2048))


def check_settings(out: Path, opts: dict[str, Any]) -> None:
    """Refuse to resume a results file written under different settings."""
    path = out / "settings.json"
    mine = {k: opts[k] for k in SETTINGS}
    if path.exists():
        theirs = json.loads(path.read_text())
        diff = sorted(k for k in SETTINGS if theirs.get(k) != mine.get(k))
        if diff:
            raise ValueError(f"{out}/results.jsonl was written with another {diff[0]} "
                             f"({theirs.get(diff[0])!r}); use another --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(mine, indent=1))


def run(args: argparse.Namespace) -> int:
    opts = resolve(args)
    methods = [m.strip() for m in str(opts["methods"]).split(",") if m.strip()]
    for m in methods:
        load_procedure(m)
    try:
        budgets = [int(b) for b in str(opts["budgets"]).split(",") if b.strip()]
    except ValueError as e:
        raise ValueError(f"--budgets wants integers like 4,8,16,32, got {opts['budgets']!r}") from e
    sets = parse_sets(opts["set"])
    reward_spec = opts["reward"] or ("arith_process" if opts["task"] == "arith" else None)
    opts["reward"] = reward_spec
    for m in methods:  # fail on unknown settings before loading anything heavy
        build_config(load_procedure(m), opts["temperature"], opts["max_tokens"], opts["seed"], sets)
    out = Path(opts["out"] or f"runs/eval-{opts['task'].replace(':', '-')}")
    rows = load_rows(opts["task"], opts["split"], opts["n_problems"])
    problems = to_problems(rows)
    judge = make_judge(opts["task"])
    build_reward(reward_spec, opts["task"])  # validate the spec early
    check_settings(out, opts)
    engines = build_engines(opts)
    try:
        evaluate(problems, engines, methods, budgets, out / "results.jsonl", judge,
                 lambda engine: build_reward(reward_spec, opts["task"], engine),
                 lambda module: build_config(module, opts["temperature"], opts["max_tokens"], opts["seed"], sets),
                 batch=int(opts["batch"]), caps={"generated_tokens": opts["max_generated_tokens"],
                                                 "rm_calls": opts["max_rm_calls"]})
    finally:
        for e in engines:
            e.close()
    ids = {p.id for p in problems}
    chosen = [r for r in read_rows(out / "results.jsonl") if r["method"] in methods and str(r["problem_id"]) in ids]
    summary = summarize(chosen)
    print(format_table(summary))
    reach = tokens_to_reach(summary, "best_of_n", max(budgets))
    if reach:
        print(format_reach(reach))
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    if not opts["no_plot"] and summary:
        print(f"plot: {plot(summary, out / 'accuracy_vs_tokens.png', title=str(opts['task']))}")
    return 0


__all__ = ["add_arguments", "evaluate", "format_table", "plot", "run", "summarize"]
