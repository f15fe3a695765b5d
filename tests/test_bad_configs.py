"""Bad configs and inputs (issue 19, section 6): each gets a one-line error that names what is wrong and what to
do, raised before anything heavy loads, and with nothing written half-way (no output folder, no settings.json).

Every case runs through the real CLI entry point (`twinloop eval`, `twinloop train ...`) with its real parsers;
no model is loaded, because every check comes first."""
import json
import shutil
from pathlib import Path

import pytest

from twinloop.cli import main as cli

REPO = Path(__file__).resolve().parents[1]
POLICY = REPO / "checkpoints" / "tiny-arith-policy"


def run_cli(argv, capsys) -> str:
    """The CLI's exit code must be 2 (a user error) and its stderr one line; returns that line."""
    capsys.readouterr()
    assert cli(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "Warning" not in line
           and "is_vllm_available" not in line]
    assert len(err) == 1, err
    return err[0]


def eval_argv(out: Path, *extra: str) -> list[str]:
    return ["eval", "--checkpoint", str(POLICY), "--task", "arith", "--methods", "greedy", "--budgets", "1",
            "--n_problems", "2", "--engine", "hf", "--out", str(out), "--no_plot", *extra]


def scalar_rm_folder(tmp_path: Path) -> Path:
    """A folder whose config says it is a sequence classifier (a scalar RM), as `twinloop train orm` writes."""
    folder = tmp_path / "scalar-rm"
    folder.mkdir()
    config = json.loads((POLICY / "config.json").read_text())
    config["architectures"] = [config["architectures"][0].replace("ForCausalLM", "ForSequenceClassification")]
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def broken_bundle(tmp_path: Path) -> Path:
    """A reward bundle with a manifest, one of whose files was changed after the manifest was written."""
    from twinloop.checkpoints.manifest import write_manifest

    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "twinloop_reward.json").write_text(json.dumps({
        "format_version": 2, "kind": "orm", "reward_class": "twinloop.rewards.scalar:ScalarRM", "settings": {},
        "model": {"head": "sequence_classification"}, "manifest": "manifest.json"}))
    (folder / "model.safetensors").write_bytes(b"0123456789")
    write_manifest(folder)
    (folder / "model.safetensors").write_bytes(b"0123456780")  # same size, other bytes
    return folder


# ---------------------------------------------------------------------------------------------- twinloop eval
@pytest.mark.parametrize("extra, expected", [
    (["--n_problems", "0"], "--n_problems must be >= 1 (leave it out for the whole split), got 0"),
    (["--budgets", "0"], "--budgets wants integers >= 1 like 4,8,16,32, got '0'"),
    (["--budgets", "4,x"], "--budgets wants integers >= 1 like 4,8,16,32, got '4,x'"),
    (["--batch", "0"], "--batch must be >= 1, got 0"),
    (["--max_tokens", "0"], "--max_tokens must be >= 1, got 0"),
    (["--server_timeout", "0"], "--server_timeout must be > 0 seconds, got 0.0"),
    (["--methods", ","], "--methods is empty"),
    (["--methods", "greedy,nosuch"], "unknown search method 'nosuch'"),
    (["--batch", "abc"], "argument --batch: invalid int value: 'abc' (twinloop eval --help lists the settings)"),
    (["--reward", "collections:Counter"], "collections:Counter is outside twinloop; loading it runs its code"),
    (["--reward", str(POLICY)], "has no twinloop_reward.json: not a twinloop reward bundle"),
])
def test_eval_bad_settings_fail_in_one_line_before_writing(tmp_path, capsys, extra, expected):
    out = tmp_path / "out"
    line = run_cli(eval_argv(out, *extra), capsys)
    assert expected in line
    assert not out.exists()  # no settings.json, no summary, no empty results file


def test_eval_trust_remote_code_lets_an_outside_class_through():
    from twinloop.eval_cli import reward_for

    with pytest.raises(ValueError, match="outside twinloop"):
        reward_for("collections:Counter", "arith")
    assert reward_for("collections:Counter", "arith", None, trust_remote_code=True) is None  # validated only


def test_eval_missing_checkpoint_and_reward_model_as_policy(tmp_path, capsys):
    out = tmp_path / "out"
    argv = eval_argv(out)
    argv[argv.index("--checkpoint") + 1] = str(tmp_path / "nowhere")
    line = run_cli(argv, capsys)
    assert "checkpoint folder" in line and line.endswith("nowhere not found")
    argv[argv.index("--checkpoint") + 1] = str(scalar_rm_folder(tmp_path))
    line = run_cli(argv, capsys)
    assert "is a reward model (" in line and "ForSequenceClassification), not a policy" in line
    assert "--reward FOLDER" in line
    assert not out.exists()


def test_eval_bundle_failing_its_manifest_is_refused_before_any_engine(tmp_path, capsys):
    out = tmp_path / "out"
    line = run_cli(eval_argv(out, "--reward", str(broken_bundle(tmp_path))), capsys)
    assert "fails its manifest check: model.safetensors: altered (sha256 differs)" in line
    assert "export it again" in line
    assert not out.exists()


def test_eval_recipe_unknown_key_and_wrong_types(tmp_path, capsys):
    out = tmp_path / "out"
    cases = {"budgetz: [4]\n": "has unknown key 'budgetz'",
             "batch: [1, 2]\n": "eval setting 'batch' must be an int, got [1, 2]",
             "temperature: hot\n": "eval setting 'temperature' must be a float, got 'hot'",
             "no_plot: 3\n": "eval setting 'no_plot' must be a bool, got 3"}
    for i, (text, expected) in enumerate(cases.items()):
        recipe = tmp_path / f"r{i}.yaml"
        recipe.write_text("task: arith\nreward: none\ntrain: {}\neval:\n  " + text)
        line = run_cli(["eval", "--recipe", str(recipe), "--checkpoint", str(POLICY), "--out", str(out)], capsys)
        assert f"recipe {recipe}" in line and expected in line, line
    assert not out.exists()


def test_eval_empty_dataset_is_an_error_before_any_engine(tmp_path, monkeypatch):
    from twinloop.infer import evaluate
    from twinloop.infer.eval_config import parse_eval_args

    from twinloop.eval_cli import reward_for

    monkeypatch.setattr(evaluate, "load_rows", lambda *a, **k: [])
    monkeypatch.setattr(evaluate, "build_engines", lambda opts: pytest.fail("engine built for an empty dataset"))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"task 'arith' split 'test' has no problems; check --task and --split"):
        evaluate.run(parse_eval_args(eval_argv(out)[1:]), reward_for)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- twinloop train
def write_recipe(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, expected", [
    ("max_stepz: 3\n", "has unknown key 'max_stepz'; remove it or fix its spelling"),
    ("max_steps: abc\n", "max_steps must be a number (int), got 'abc'"),
    ("max_steps: [1, 2]\n", "max_steps must be a number (int), got [1, 2]"),
    ("max_steps: 2.5\n", "max_steps must be an integer, got 2.5"),
    ("learning_rate: fast\n", "learning_rate must be a number (float), got 'fast'"),
    ("reward_funcs: arith_outcome\ntrain_size: 0\n", "train_size must be >= 1 (training problems), got 0"),
    ("task: arith\nreward: arith_outcome\ntrain: {max_stepz: 3}\n", "has unknown key 'max_stepz'"),
])
def test_train_recipe_errors_are_one_line(tmp_path, capsys, text, expected):
    recipe = write_recipe(tmp_path, text)
    out = tmp_path / "out"
    line = run_cli(["train", "gppo", "--config", str(recipe), "--output_dir", str(out)], capsys)
    assert expected in line
    if not expected.startswith("train_size"):  # parse errors name the recipe; train_size is checked after parsing
        assert f"recipe {recipe}" in line
    assert not out.exists()


def test_train_bad_command_line_flags_are_one_line(tmp_path, capsys):
    recipe = str(REPO / "recipes" / "arith" / "process.yaml")
    out = str(tmp_path / "out")
    line = run_cli(["train", "gppo", "--config", recipe, "--output_dir", out, "--max_stepz", "3"], capsys)
    assert "unknown command-line flag(s) ['--max_stepz', '3']" in line
    line = run_cli(["train", "gppo", "--config", recipe, "--output_dir", out, "--max_steps", "abc"], capsys)
    assert "argument --max_steps/--max-steps: invalid int value: 'abc'" in line


def test_train_missing_policy_and_reward_model_as_policy(tmp_path, capsys):
    out = tmp_path / "out"
    for model, expected in ((tmp_path / "nowhere", "model folder not found"),
                            (scalar_rm_folder(tmp_path), "ForSequenceClassification), not a policy")):
        recipe = write_recipe(tmp_path, f"model_name_or_path: {model}\nreward_funcs: [arith_outcome]\n")
        assert expected in run_cli(["train", "gppo", "--config", str(recipe), "--output_dir", str(out)], capsys)
        recipe = write_recipe(tmp_path, f"policy_dir: {model}\n")
        line = run_cli(["train", "orm", "--config", str(recipe), "--output_dir", str(out)], capsys)
        assert ("policy folder not found" if "nowhere" in str(model) else expected) in line
    assert not out.exists()


def test_train_reward_specs_outside_twinloop_and_bad_bundles(tmp_path):
    from twinloop.train.gppo import GPPOScriptArguments, build_rewards

    with pytest.raises(ValueError, match=r"^collections:Counter is outside twinloop; loading it runs its code: pass "
                                         r"trust_remote_code=True"):
        build_rewards(GPPOScriptArguments(reward_funcs=["collections:Counter"]))
    with pytest.raises(FileNotFoundError, match="has no twinloop_reward.json: not a twinloop reward bundle"):
        build_rewards(GPPOScriptArguments(reward_funcs=[str(POLICY)]))
    with pytest.raises(ValueError, match="fails its manifest check: model.safetensors: altered"):
        build_rewards(GPPOScriptArguments(reward_funcs=[str(broken_bundle(tmp_path))]))


def test_train_empty_task_is_an_error(monkeypatch):
    from twinloop.train import gppo

    class Empty:
        def load(self, *a, **k):
            return []

    monkeypatch.setattr("twinloop.tasks.build_task", lambda spec: Empty())
    with pytest.raises(ValueError, match=r"task 'arith' gave no training problems \(train_size=4\)"):
        gppo.build_dataset(gppo.GPPOScriptArguments(train_size=4))


def test_resume_from_a_missing_checkpoint_is_one_line(tmp_path):
    from twinloop.train.checkpointing import resolve_resume

    with pytest.raises(FileNotFoundError, match="not a complete checkpoint folder .* pass auto"):
        resolve_resume(str(tmp_path / "checkpoint-4"), tmp_path)
    shutil.rmtree(tmp_path)
    assert resolve_resume("auto", tmp_path) is None  # a fresh run
