"""Kill and resume (issue 19, section 4), driven through the CLIs by bench/kill_resume.py: SIGKILL
`twinloop eval` mid-run and rerun it. The training half (``kill_resume.train_kill_resume``: a 2-process run
killed three times and resumed to the uninterrupted run's weights) takes minutes, so it is a bench
(`python bench/kill_resume.py --what train`); here are the two resume rules it found missing: resume from the
newest *complete* checkpoint, and never train past max_steps when a finished run is relaunched."""
import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("kill_resume", Path(__file__).resolve().parents[1] / "bench" /
                                              "kill_resume.py")
kill_resume = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kill_resume)


def test_sigkilled_eval_rerun_finishes_only_the_remaining_problems(tmp_path):
    r = kill_resume.eval_kill_resume(tmp_path / "eval", n_problems=20, kill_after_rows=5)
    assert r["killed"] and r["rerun_rc"] == 0, r
    assert r["rows_before_kill"] >= 5 and r["kept_intact"]  # rows on disk before the kill stay as they were
    assert r["added"] == r["expected"] - r["rows_before_kill"]  # the rerun did only the rest
    assert r["rows_after"] == r["expected"] and r["duplicates"] == 0 and r["missing"] == 0
    assert r["survivors"] == []


def _checkpoint(folder: Path, step: int, complete: bool = True) -> Path:
    import json

    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"w")
    if complete:  # the Trainer writes trainer_state.json last
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "log_history": []}))
    return path


def test_resume_picks_the_newest_complete_checkpoint(tmp_path):
    from twinloop.train.checkpointing import checkpoint_step, last_complete_checkpoint, resolve_resume

    assert last_complete_checkpoint(tmp_path / "fresh") is None and resolve_resume("auto", tmp_path) is None
    _checkpoint(tmp_path, 2)
    four = _checkpoint(tmp_path, 4)
    _checkpoint(tmp_path, 10, complete=False)  # killed mid-save by an older in-place save
    _checkpoint(tmp_path, 6, complete=False)
    (tmp_path / ".staging").mkdir()
    _checkpoint(tmp_path / ".staging", 8)  # staged, never published
    (tmp_path / "checkpoint-9.tmp").mkdir()
    assert resolve_resume("auto", tmp_path) == resolve_resume(True, tmp_path) == str(four)
    assert checkpoint_step(four) == 4 and checkpoint_step(tmp_path / "checkpoint-6") is None
    assert resolve_resume(str(four), tmp_path) == str(four)
    assert resolve_resume(None, tmp_path) is None and resolve_resume("", tmp_path) is None


def test_resuming_a_finished_run_trains_no_step_past_max_steps(tmp_path):
    """transformers 5.19 trains one step past max_steps when resumed from the final checkpoint (each relaunch
    of a finished run added a checkpoint and rotated checkpoint-<max_steps> away); resuming a finished run
    must only load its weights."""
    import json

    import torch
    from safetensors.torch import load_file
    from twinloop.train.gppo import main

    from twinloop.tiny import build_random_tiny

    torch.set_num_threads(1)
    model, out = build_random_tiny(tmp_path / "model"), tmp_path / "run"
    argv = ["--config", str(Path(__file__).resolve().parents[1] / "recipes/arith/process.yaml"),
            "--model_name_or_path", str(model), "--output_dir", str(out), "--max_steps", "2", "--train_size", "8",
            "--per_device_train_batch_size", "4", "--num_generations", "4", "--max_completion_length", "4",
            "--save_steps", "1", "--save_total_limit", "2", "--logging_steps", "1", "--disable_tqdm", "true",
            "--resume_from_checkpoint", "auto"]
    assert main(argv) == 0
    first = load_file(str(out / "model.safetensors"))
    (out / "model.safetensors").unlink()  # as if killed after the last checkpoint, before the final save
    assert main(argv) == 0  # relaunched: nothing left to train
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and max(r["step"] for r in state["log_history"]) == 2
    again = load_file(str(out / "model.safetensors"))  # the final weights are saved again, from checkpoint-2
    assert set(again) == set(first) and all(torch.equal(first[k], again[k]) for k in first)
