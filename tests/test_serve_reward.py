"""`twinloop serve-reward`: the HTTP scoring endpoint on loopback. Scores equal in-process scoring; requests
that do not parse get a 4xx naming the problem; a scoring failure answers 500 and the server keeps serving."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests
from twinloop.checkpoints.export import export, load_reward
from twinloop.checkpoints.serve import make_server
from twinloop.rewards.base import RewardBase

PROMPTS = ["What is 2 + 3?", [{"role": "user", "content": "What is 7 * 8?"}]]
COMPLETIONS = ["2 + 3 = 5\n\nAnswer: 5", "56"]


@pytest.fixture(scope="module")
def orm_export(tiny_model_dir, tmp_path_factory):
    from twinloop.tiny import build_random_head

    root = tmp_path_factory.mktemp("serve")
    build_random_head(tiny_model_dir, root / "src", seed=21)
    return export(root / "src", root / "orm", "orm", settings={"sigmoid": True})


@pytest.fixture(scope="module")
def served(orm_export):
    """`python -m twinloop.serve_reward_cli OUT --port P` in its own process, stopped by PID."""
    from twinloop.infer.openai_engine import free_port

    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "twinloop.serve_reward_cli", str(orm_export), "--port", str(port),
                             "--backend", "transformers", "--dtype", "float32"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"serve-reward did not come up: {proc.stdout.read()[-2000:]}")
        time.sleep(0.3)
    yield url, proc
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)


def test_scores_over_http_equal_in_process_scores(served, orm_export):
    url, proc = served
    r = requests.post(url + "/score", json={"prompts": PROMPTS, "completions": COMPLETIONS}, timeout=60)
    assert r.status_code == 200, r.text
    expected = load_reward(orm_export)(PROMPTS, COMPLETIONS)
    assert r.json()["scores"] == expected and all(0.0 < s < 1.0 for s in expected)
    info = requests.get(url + "/info", timeout=10).json()
    assert info["kind"] == "orm" and info["score_range"] == [0.0, 1.0] and info["usage"]["items"] == 2


@pytest.mark.parametrize("body, status, message", [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "must be a JSON object"),
    (json.dumps({"completions": ["5"]}).encode(), 400, "'prompts' must be a list"),
    (json.dumps({"prompts": ["a", "b"], "completions": ["5"]}).encode(), 400, "same length"),
    (json.dumps({"prompts": [{"role": "user"}], "completions": ["5"]}).encode(), 400, "prompts[0]"),
    (json.dumps({"prompts": ["a"], "completions": ["5"], "columns": {"x": [1, 2]}}).encode(), 400, "columns"),
])
def test_bad_requests_get_a_4xx_with_a_clear_message(served, body, status, message):
    url, proc = served
    r = requests.post(url + "/score", data=body, headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == status and message in r.json()["error"]
    assert proc.poll() is None


def test_wrong_endpoints_for_the_kind(served):
    url, _ = served
    assert requests.post(url + "/compare", json={"prompt": "p", "a": "1", "b": "2"}, timeout=10).status_code == 404
    assert requests.post(url + "/nope", json={}, timeout=10).status_code == 404
    assert requests.get(url + "/nope", timeout=10).status_code == 404


class Flaky(RewardBase):
    """Fails on the completion "boom" (a stand-in for any scoring error)."""

    name = "flaky"

    def score(self, prompt, completion, **row):
        return 1.0 / 0.0 if completion == "boom" else float(len(completion))


@pytest.fixture()
def in_thread():
    servers = []

    def start(reward, spec=None):
        server = make_server(reward, spec)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.url

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def test_scoring_failure_answers_500_and_the_server_keeps_serving(in_thread):
    url = in_thread(Flaky())
    r = requests.post(url + "/score", json={"prompts": ["p"], "completions": ["boom"]}, timeout=10)
    assert r.status_code == 500 and "ZeroDivisionError" in r.json()["error"]
    r = requests.post(url + "/score", json={"prompts": ["p", "q"], "completions": ["abc", "de"]}, timeout=10)
    assert r.status_code == 200 and r.json()["scores"] == [3.0, 2.0]
    assert requests.get(url + "/info", timeout=10).json()["failures"] == 1


def test_cli_refuses_a_folder_that_is_not_an_export(tmp_path):
    res = subprocess.run([sys.executable, "-m", "twinloop.serve_reward_cli", str(tmp_path), "--port", "1"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "twinloop_reward.json" in res.stderr


def test_prm_pairwise_and_grm_endpoints(in_thread, lora_dirs, tiny_model_dir, tmp_path):
    """Each kind's extra method over HTTP equals the in-process call on a fresh load of the same export."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, Qwen2ForTokenClassification
    from twinloop.checkpoints.export import read_spec

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = AutoConfig.from_pretrained(tiny_model_dir)
    cfg.num_labels, cfg.architectures, cfg.pad_token_id = 2, ["Qwen2ForTokenClassification"], tok.pad_token_id
    torch.manual_seed(22)
    Qwen2ForTokenClassification(cfg).float().save_pretrained(tmp_path / "tok")
    tok.save_pretrained(tmp_path / "tok")
    prm = export(tmp_path / "tok", tmp_path / "prm", "prm")
    url = in_thread(load_reward(prm), read_spec(prm))
    steps = [["2 + 3 = 5", "Answer: 5"]]
    r = requests.post(url + "/step_scores", json={"prompts": ["What is 2 + 3?"], "steps": steps}, timeout=30)
    assert r.status_code == 200 and r.json()["step_scores"] == load_reward(prm).step_scores(["What is 2 + 3?"], steps)
    r = requests.post(url + "/step_scores", json={"prompts": ["p"], "steps": [[]]}, timeout=30)
    assert r.status_code == 400 and "non-empty list of step strings" in r.json()["error"]

    _, merged = lora_dirs
    pair = export(merged, tmp_path / "pair", "pairwise", settings={"max_tokens": 6})
    url = in_thread(load_reward(pair), read_spec(pair))
    r = requests.post(url + "/compare", json={"prompt": "What is 2 + 3?", "a": "5", "b": "6"}, timeout=60)
    assert r.status_code == 200 and r.json()["p_a_wins"] == load_reward(pair).compare("What is 2 + 3?", "5", "6")

    grm = export(merged, tmp_path / "grm", "grm", settings={"k": 2, "temperature": 0.0, "max_tokens": 6})
    url = in_thread(load_reward(grm), read_spec(grm))
    r = requests.post(url + "/vote", json={"query": "What is 2 + 3?", "responses": ["5", "6"]}, timeout=60)
    expected = load_reward(grm).vote("What is 2 + 3?", ["5", "6"])
    body = r.json()
    assert r.status_code == 200 and body["totals"] == expected.totals and body["best"] == expected.best
    assert [j["text"] for j in body["judgments"]] == [j.text for j in expected.judgments]
    assert requests.post(url + "/vote", json={"query": "q", "responses": ["a"], "k": 0}, timeout=10).status_code == 400
    assert requests.post(url + "/step_scores", json={"prompts": [], "steps": []}, timeout=10).status_code == 404
