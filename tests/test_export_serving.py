"""Serving exported rewards: a scalar RM through the vLLM engine's pooling path, through vLLM's
OpenAI-compatible server (`/classify`), and behind `serve-reward` on the engine, all matching transformers;
a GRM exported as a LoRA adapter served on the policy's base model by the vLLM engine, with its parser."""
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests
from twinloop.checkpoints.export import export, load_reward

PROMPTS = ["What is 2 + 3?", [{"role": "user", "content": "What is 7 * 8?"}], "What is 9 - 4?"]
COMPLETIONS = ["2 + 3 = 5\n\nAnswer: 5", "56", "9 - 4 = 5\n\nAnswer: \\boxed{5}"]
TOL = 1e-5  # vLLM CPU fp32 vs transformers fp32 (measured ~1e-6)


@pytest.fixture(scope="session")
def orm_export(tiny_model_dir, tmp_path_factory):
    from twinloop.tiny import build_random_head

    root = tmp_path_factory.mktemp("serving")
    build_random_head(tiny_model_dir, root / "src", seed=31)
    return export(root / "src", root / "orm", "orm")


@pytest.fixture(scope="module")
def reference_scores(orm_export):
    return load_reward(orm_export)(PROMPTS, COMPLETIONS)  # transformers, fp32


@pytest.fixture(scope="session")
def vllm_orm(orm_export):
    """The exported scalar RM on a vLLM pooling engine, kept for the session (closing an in-process engine
    early tears down state the session's other engines share)."""
    reward = load_reward(orm_export, backend="vllm", engine_kwargs={"max_model_len": 512})
    yield reward
    reward.engine.close()


def test_scalar_rm_on_the_vllm_pooling_engine_matches_transformers(vllm_orm, reference_scores):
    assert vllm_orm.engine.runner == "pooling"
    assert vllm_orm(PROMPTS, COMPLETIONS) == pytest.approx(reference_scores, abs=TOL)


def test_serve_reward_on_the_vllm_engine(vllm_orm, reference_scores, orm_export):
    from twinloop.checkpoints.export import read_spec
    from twinloop.checkpoints.serve import make_server

    server = make_server(vllm_orm, read_spec(orm_export))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        r = requests.post(server.url + "/score", json={"prompts": PROMPTS, "completions": COMPLETIONS}, timeout=60)
        assert r.status_code == 200 and r.json()["scores"] == pytest.approx(reference_scores, abs=TOL)
    finally:
        server.shutdown()
        server.server_close()


def test_grm_lora_export_served_on_the_policy_base_by_vllm(lora_dirs, vllm_engine, tmp_path):
    """The adapter export runs as a LoRA on the engine serving its base; greedy judgments equal peft's, and the
    GRM parser reads them the same way."""
    from twinloop.rewards.generative import GenerativeReward

    adapter, _ = lora_dirs
    out = export(adapter, tmp_path / "grm", "grm", settings={"k": 2, "temperature": 0.0, "max_tokens": 8})
    on_vllm = load_reward(out, engine=vllm_engine)
    on_hf = load_reward(out)  # transformers: base + peft adapter
    assert isinstance(on_vllm, GenerativeReward) and on_vllm.lora == str(out) and on_vllm.engine is vllm_engine
    v = on_vllm.vote("What is 2 + 3?", ["5", "6"])
    h = on_hf.vote("What is 2 + 3?", ["5", "6"])
    assert [j.text for j in v.judgments] == [j.text for j in h.judgments]
    assert [j.scores for j in v.judgments] == [j.scores for j in h.judgments] and v.totals == h.totals
    assert on_vllm.usage.unparseable == sum(j.scores is None for j in v.judgments)
    assert on_vllm(["What is 2 + 3?"], ["5"]) == on_hf(["What is 2 + 3?"], ["5"])


@pytest.fixture(scope="module")
def pooling_server(orm_export):
    """`python -m vllm.entrypoints.openai.api_server --runner pooling` on the export (started once, ~30 s),
    stopped by PID."""
    from twinloop.infer.openai_engine import free_port

    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING", None)
    proc = subprocess.Popen([sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(orm_export),
                             "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len",
                             "512", "--enforce-eager", "--runner", "pooling", "--served-model-name", "rm"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while True:
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail(f"vLLM pooling server did not start: {proc.stderr.read()[-2000:]}")
        time.sleep(0.5)
    yield url
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def test_scalar_rm_through_the_openai_compatible_classify_endpoint(pooling_server, orm_export, reference_scores):
    from transformers import AutoTokenizer
    from twinloop.checkpoints.serve import ServedClassifier

    client = ServedClassifier(pooling_server, AutoTokenizer.from_pretrained(orm_export))
    assert client.model == "rm"
    served = load_reward(orm_export, engine=client)
    assert served(PROMPTS, COMPLETIONS) == pytest.approx(reference_scores, abs=TOL)
    with pytest.raises(RuntimeError, match="/classify answered 4"):
        client.classify([[10**7]])  # a token id outside the vocabulary: the server's error, one line
