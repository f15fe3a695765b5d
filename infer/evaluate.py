"""`twinloop eval`: run search procedures at several budgets on a task; write one JSONL row per problem
and budget (resumable: a rerun skips finished rows, every row is flushed as soon as its batch ends, and a
rerun under other settings is refused); the table and plot come from ``twinloop.infer.report``.

    twinloop eval --checkpoint checkpoints/tiny-arith-policy --task arith --method greedy,majority,best_of_n \
        --budgets 4,8,16,32 --reward arith_process --n-problems 50

Several engines share the work (``--servers URL,URL`` of running vLLM servers): each takes the next batch
from one queue, a dead server's batch goes to the live ones, and all append to the same JSONL. Methods are
the module names under ``twinloop.infer.search``.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
import os
import pkgutil
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from twinloop.infer.engine import lora_rank
from twinloop.infer.eval_tasks import (  # noqa: F401  (re-exported: quickstart and benches import them here)
    load_rows,
    make_judge,
    task_reward,
    to_problems,
)
from twinloop.infer.report import read_rows  # noqa: F401  (re-exported)
from twinloop.infer.search._common import Budget, Problem, SearchResult

SEARCH_PACKAGE = "twinloop.infer.search"
SETTINGS = ("checkpoint", "tokenizer", "task", "split", "temperature", "max_tokens", "reward", "set",
            "max_generated_tokens", "max_rm_calls", "seed", "dtype", "engine", "max_model_len",
            "dev_problems")  # a results file is only resumed under the same values of these


# ------------------------------------------------------------------------------------------ methods
def procedures() -> list[str]:
    pkg = importlib.import_module(SEARCH_PACKAGE)
    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


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
    return cls(**{"temperature": temperature, "max_tokens": max_tokens, "seed": seed} | overrides)


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
             progress: bool = True, retries: int = 2) -> int:
    """Run every (method, budget) on every problem not yet in ``out_path``; returns rows written.

    Problems are split into batches (jobs) in one shared queue; one thread per engine takes the next job,
    with its own reward object built on that engine, so usage deltas stay exact. Each finished batch is
    appended and flushed. An engine that fails (EngineError, e.g. a dead server) takes no more jobs and its
    unfinished job goes back to the queue for the live engines, at most ``retries`` times per job; when no
    engine is left, or a job used up its retries, a one-line EngineError ends the run (a rerun resumes).
    """
    from tqdm import tqdm

    caps = caps or {}
    done = finished_keys(out_path)
    jobs: list[tuple[str, int, list[Problem]]] = []
    for method in methods:
        budget_free = load_procedure(method).BUDGET_FREE  # unknown names fail before any work
        for n in ([1] if budget_free else budgets):
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
    rewards: dict[int, Any] = {}

    def work(shard: int, job: tuple[str, int, list[Problem]]) -> None:
        method, n, chunk = job
        engine = engines[shard]
        if shard not in rewards:
            rewards[shard] = reward_factory(engine)
        module = load_procedure(method)
        budget = Budget(n=n, generated_tokens=caps.get("generated_tokens"), rm_calls=caps.get("rm_calls"))
        results = module.run(chunk, engine, rewards[shard], budget, config_for(module))
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
        run_queue(jobs, len(engines), work, retries)
    finally:
        bar.close()
    return written[0]


def run_queue(jobs: Sequence[Any], n_workers: int, work: Callable[[int, Any], None], retries: int = 2) -> None:
    """Run ``work(worker, job)`` for every job, each worker (engine) taking the next job from one queue.

    A worker whose job raises EngineError is dead: it takes no more jobs and the job goes back to the
    queue with one more try. Rounds of the live workers repeat while jobs are queued; every round either
    empties the queue or loses a worker, so there are at most ``n_workers + 1`` rounds. Raises a one-line
    EngineError when no worker is left or a job failed ``retries + 1`` times.
    """
    from twinloop.contracts import EngineError

    queue = deque((job, 0) for job in jobs)
    lock = threading.Lock()
    dead: dict[int, str] = {}
    given_up: list[str] = []

    def worker(w: int) -> None:
        while True:
            with lock:
                if not queue or given_up:
                    return
                job, tries = queue.popleft()
            try:
                work(w, job)
            except EngineError as e:
                with lock:
                    dead[w] = str(e).splitlines()[0] if str(e) else type(e).__name__
                    if tries >= retries:
                        given_up.append(f"a job failed {tries + 1} times (last: {dead[w]})")
                    else:
                        queue.append((job, tries + 1))
                return

    for _ in range(n_workers + 1):
        live = [w for w in range(n_workers) if w not in dead]
        if not queue or given_up or not live:
            break
        if len(live) == 1:
            worker(live[0])
        else:
            with ThreadPoolExecutor(len(live)) as pool:
                for fut in [pool.submit(worker, w) for w in live]:
                    fut.result()
    todo = ("restart the server or pass another --servers URL, then rerun the same command: finished rows are "
            "kept and only the rest runs")
    if given_up:
        raise EngineError(f"eval stopped: {given_up[0]}; {todo}")
    if queue:
        reasons = "; ".join(f"engine {w}: {why}" for w, why in sorted(dead.items()))
        raise EngineError(f"eval stopped: every engine failed ({reasons}); {todo}")


# ------------------------------------------------------------------------------------------------ CLI
def parse_sets(items: Sequence[str] | None) -> dict[str, Any]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set wants KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = parse_value(v.strip())
    return out


def method_settings(items: Sequence[str] | None, methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """--set values per method: ``METHOD:KEY=VALUE`` goes to that method only, ``KEY=VALUE`` to every method of
    the run whose config has KEY. A METHOD not in the run, or a KEY no method of the run has, is an error."""
    per: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for key, value in parse_sets(items).items():
        method, _, name = key.rpartition(":")
        if method:
            if method not in per:
                raise ValueError(f"--set {key}: {method} is not a method of this run ({', '.join(methods)})")
            per[method][name] = value
            continue
        having = [m for m in methods if name in {f.name for f in dataclasses.fields(load_procedure(m).Config)}]
        if not having:
            raise ValueError(f"--set {name}: no method of this run ({', '.join(methods)}) has that setting")
        for m in having:
            per[m][name] = value
    return per


def method_of(module: Any) -> str:
    return module.__name__.rsplit(".", 1)[-1]


def check_checkpoint(ckpt: str | None, servers: str | None = None) -> None:
    """One-line error unless ``ckpt`` is a policy folder (not missing, not a reward model); with ``servers`` the
    model runs there and a tokenizer-only folder is enough."""
    from twinloop.infer.engine import check_policy_dir

    if not ckpt:
        raise ValueError("--checkpoint is required (the policy model folder)")
    if not Path(ckpt).is_dir():
        raise FileNotFoundError(f"checkpoint folder {ckpt} not found")
    if not servers or (Path(ckpt) / "config.json").is_file():
        check_policy_dir(ckpt)


def build_engines(opts: dict[str, Any]) -> list[Any]:
    ckpt = opts["checkpoint"]
    check_checkpoint(ckpt, opts["servers"])
    if opts["servers"]:
        from twinloop.infer.openai_engine import OpenAIEngine

        tok = opts["tokenizer"] or ckpt
        timing = {"read_timeout": float(opts.get("server_timeout") or 60.0),
                  "retries": int(opts.get("server_retries") if opts.get("server_retries") is not None else 2)}
        return [OpenAIEngine(url.strip(), tokenizer=tok, **timing) for url in str(opts["servers"]).split(",")
                if url.strip()]
    if opts["engine"] == "hf":
        from transformers import AutoTokenizer
        from twinloop.infer.hf_engine import HFEngine

        tok = AutoTokenizer.from_pretrained(opts["tokenizer"]) if opts["tokenizer"] else None
        return [HFEngine(ckpt, tokenizer=tok, dtype=opts["dtype"])]
    from twinloop.infer.vllm_engine import VLLMEngine

    adapter = str(opts.get("reward") or "").partition(":")[2]  # a judge on the policy through a LoRA: NAME:ADAPTER
    is_adapter = bool(adapter) and (Path(adapter) / "adapter_config.json").is_file()
    lora = {"enable_lora": True, "max_lora_rank": lora_rank(adapter)} if is_adapter else {}
    return [VLLMEngine(ckpt, dtype=opts["dtype"], max_model_len=opts["max_model_len"] or model_context(ckpt),
                       seed=opts["seed"], enable_prefix_caching=True, tokenizer=opts["tokenizer"], **lora)]


def model_context(folder: str, cap: int = 4096) -> int:
    """The model's own context length (max_position_embeddings), capped: the engine's default length."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return 2048
    return int(min(cap, config.get("max_position_embeddings") or 2048))


def effective_settings(opts: dict[str, Any]) -> dict[str, Any]:
    """The settings a results file depends on, as the run will really use them."""
    mine = {k: opts.get(k) for k in SETTINGS}
    mine["engine"] = "servers" if opts.get("servers") else opts.get("engine")
    if mine["engine"] == "vllm" and opts.get("checkpoint"):
        mine["max_model_len"] = opts.get("max_model_len") or model_context(str(opts["checkpoint"]))
    return mine


def check_settings(out: Path, opts: dict[str, Any]) -> None:
    """Refuse (one line) to resume a results file written under different settings; a settings file
    from before a setting was recorded counts as different."""
    path = out / "settings.json"
    if path.exists():
        mine, theirs = effective_settings(opts), json.loads(path.read_text())
        diff = sorted(k for k in SETTINGS if theirs.get(k) != mine.get(k))
        if diff:
            raise ValueError(f"{out}/results.jsonl was written with another {diff[0]} "
                             f"({theirs.get(diff[0])!r}, now {mine.get(diff[0])!r}); use another --out")


def write_settings(out: Path, opts: dict[str, Any]) -> None:
    """Record the settings once the engines are built (a run that fails to start leaves no settings)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "settings.json"
    if not path.exists():
        path.write_text(json.dumps(effective_settings(opts), indent=1))


RewardBuilder = Callable[[Any, str, Any], Any]  # (spec, task, engine or None to validate) -> reward


def run(opts: dict[str, Any], build_reward: RewardBuilder) -> int:
    """`twinloop eval` with the settings of ``twinloop.infer.eval_config.parse_eval_args``; ``build_reward`` comes
    from the CLI layer (``twinloop.eval_cli``): rewards are built by the one builder, above the engines."""
    from twinloop.infer import report
    from twinloop.infer.eval_config import check_eval_settings, positive_ints

    opts = dict(opts)
    check_eval_settings(opts)  # nothing is loaded or written before the settings can run
    methods = [m.strip() for m in str(opts["methods"]).split(",") if m.strip()]
    for m in methods:
        load_procedure(m)
    budgets = positive_ints(opts["budgets"], "--budgets")
    per_method = method_settings(opts["set"], methods)
    reward_spec = opts["reward"] or ("arith_process" if opts["task"] == "arith" else None)
    opts["reward"] = reward_spec

    def config_for(module: Any) -> Any:
        return build_config(module, opts["temperature"], opts["max_tokens"], opts["seed"],
                            per_method.get(method_of(module), {}))

    for m in methods:  # fail on unknown settings before loading anything heavy
        config_for(load_procedure(m))
    out = Path(opts["out"] or f"runs/eval-{opts['task'].replace(':', '-')}")
    check_checkpoint(opts["checkpoint"], opts["servers"])
    rows = load_rows(opts["task"], opts["split"], opts["n_problems"])
    if not rows:
        raise ValueError(f"task {opts['task']!r} split {opts['split']!r} has no problems; check --task and --split")
    problems = to_problems(rows)
    judge = make_judge(opts["task"])
    build_reward(reward_spec, opts["task"])  # validate the spec early
    check_settings(out, opts)
    engines = build_engines(opts)
    write_settings(out, opts)

    built: list[Any] = []

    def reward_for(engine: Any) -> Any:
        built.append(build_reward(reward_spec, opts["task"], engine))
        return built[-1]

    caps = {"generated_tokens": opts["max_generated_tokens"], "rm_calls": opts["max_rm_calls"]}
    try:
        if "compute_optimal" in methods:
            from twinloop.infer import co_fit

            co = per_method["compute_optimal"]
            menu = co_fit.menu_for(config_for(load_procedure("compute_optimal")), methods)
            co.setdefault("method_settings", co_fit.settings_for_menu(per_method, menu))
            if "policy" not in co:  # fit on dev (cached beside the results)
                dev = to_problems(load_rows(opts["task"], "dev", opts["dev_problems"] or 100))
                co["policy"] = str(co_fit.fit_on_dev(dev, engines, methods, budgets, out, judge, reward_for,
                                                     config_for, batch=int(opts["batch"]), caps=caps))
        evaluate(problems, engines, methods, budgets, out / "results.jsonl", judge, reward_for, config_for,
                 batch=int(opts["batch"]), caps=caps)
    finally:
        for e in engines:
            e.close()
    ids = {p.id for p in problems}
    chosen = [r for r in report.read_rows(out / "results.jsonl")
              if r["method"] in methods and str(r["problem_id"]) in ids]
    lm_judge = any(getattr(r, "engine", None) is not None and any(r.engine is e for e in engines) for r in built)
    report.report(chosen, out, str(opts["task"]), lm_judge, ("best_of_n", max(budgets)), draw=not opts["no_plot"])
    return 0


__all__ = ["evaluate", "run", "run_queue"]
