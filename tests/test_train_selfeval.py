"""Self-evaluation probe trainer: labels from verified samples, the maths of its metrics, and a LoRA that the
search's probe (SelfEvalProbe through vLLM) reads exactly as transformers does."""
import json

import pytest
import torch

from twinloop.tasks.arith import load

torch.set_num_threads(1)


def test_better_labels_need_a_solved_prompt():
    from twinloop.train.selfeval import better_labels

    assert better_labels([1.0, 0.0, None, 0.0]) == [0, 1, 1, 1]  # a restart can reach the right answer
    assert better_labels([0.0, None, 0.0]) == [0, 0, 0]  # no sample solved it: a restart would not do better
    assert better_labels([1.0, 1.0]) == [0, 0]


def test_auc_and_selection_accuracy_with_numbers():
    from twinloop.train.selfeval import auc, selection_accuracy

    assert auc([0.9, 0.1, 0.5], [1, 0, 1]) == 1.0
    assert auc([0.2, 0.8], [1, 0]) == 0.0
    assert auc([0.5, 0.5, 0.5], [1, 0, 0]) == 0.5  # ties count half
    assert auc([0.3, 0.4], [1, 1]) != auc([0.3, 0.4], [1, 1])  # NaN: no negatives
    examples = [{"id": "a", "correct": 0}, {"id": "a", "correct": 1}, {"id": "b", "correct": 0},
                {"id": "b", "correct": 0}]
    assert selection_accuracy([0.1, 0.9, 0.5, 0.6], examples) == (0.5, 0.25)
    assert selection_accuracy([0.9, 0.1, 0.5, 0.6], examples) == (0.0, 0.25)


def _examples(split, n, seed):
    rows = load(split, n=n, seed=seed)
    out = []
    for r in rows:
        out.append({"prompt": r["prompt"], "response": r["solution"], "better": 0, "correct": 1, "id": r["id"]})
        out.append({"prompt": r["prompt"], "response": "I think\n\nAnswer: \\boxed{0}", "better": 1, "correct": 0,
                    "id": r["id"]})
    return out


def test_selfeval_adapter_trains_exports_and_the_vllm_probe_reads_it(tiny_model_dir, vllm_engine, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from twinloop.rewards.selfeval import SelfEvalProbe
    from twinloop.train.selfeval import (
        SelfEvalConfig,
        SelfEvalScriptArguments,
        p_no,
        probe_for,
        train_selfeval,
    )

    train, held_out = _examples("train", 24, 1), _examples("dev", 8, 2)
    script = SelfEvalScriptArguments(policy_dir=str(tiny_model_dir), export_dir=str(tmp_path / "adapter"),
                                     lora_r=8, lora_alpha=16, yes="1", no="0")
    cfg = SelfEvalConfig(output_dir=str(tmp_path / "out"), use_cpu=True, per_device_train_batch_size=8,
                         num_train_epochs=6, learning_rate=5e-3, save_strategy="no", logging_steps=1, seed=0,
                         disable_tqdm=True, report_to=[])
    export, metrics = train_selfeval(script, cfg, train, held_out)
    assert metrics["eval_auc_correct"] >= 0.9
    assert metrics["eval_select_accuracy"] == 1.0 and metrics["eval_sample_accuracy"] == 0.5
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["r"] == 8
    assert "SelfEval" in (tmp_path / "adapter" / "README.md").read_text()
    saved = json.loads((tmp_path / "adapter" / "twinloop_reward.json").read_text())
    assert saved["kind"] == "selfeval" and (saved["settings"]["yes"], saved["settings"]["no"]) == ("1", "0")

    # the search's probe (as `twinloop eval --reward selfeval:ADAPTER` builds it), through vLLM with the
    # adapter, agrees with transformers + peft on the same ids
    from twinloop.build import build_reward

    probe = build_reward(f"selfeval:{export}", task="arith", engine=vllm_engine)
    assert isinstance(probe, SelfEvalProbe) and probe.lora == export
    assert (probe.yes_id, probe.no_id) == (probe_for(vllm_engine.tokenizer, "1", "0").yes_id,
                                          probe_for(vllm_engine.tokenizer, "1", "0").no_id)
    prompts, responses = [e["prompt"] for e in held_out[:6]], [e["response"] for e in held_out[:6]]
    through_vllm = probe.p_no(prompts, responses)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                                      export).eval()
    reference = p_no(model, probe_for(vllm_engine.tokenizer, "1", "0"), held_out[:6])
    assert through_vllm == pytest.approx(reference, abs=2e-3)
    assert min(through_vllm[0::2]) > max(through_vllm[1::2])  # right answers: "No, a restart would not help"
