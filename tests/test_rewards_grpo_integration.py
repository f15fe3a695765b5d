"""Every reward kind, as is, as reward_funcs of trl.GRPOTrainer for one step, then the same objects in best-of-N."""
import copy
import math

import pytest


@pytest.fixture(scope="module")
def head_models(tiny_model_dir, tmp_path_factory):
    """Random tiny sequence- and token-classifiers sharing the tiny model's config and tokenizer."""
    import torch
    from transformers import (
        AutoConfig,
        AutoTokenizer,
        Qwen2ForSequenceClassification,
        Qwen2ForTokenClassification,
    )

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = AutoConfig.from_pretrained(tiny_model_dir)
    cfg.pad_token_id = tok.pad_token_id
    torch.manual_seed(4)
    seq_cfg, tok_cfg = copy.deepcopy(cfg), copy.deepcopy(cfg)
    seq_cfg.num_labels, tok_cfg.num_labels = 1, 2
    seq = Qwen2ForSequenceClassification(seq_cfg).float().eval()
    tokcls = Qwen2ForTokenClassification(tok_cfg).float().eval()
    return seq, tokcls, tok


def test_each_kind_trains_one_grpo_step(tiny_model_dir, hf_engine, head_models, tmp_path):
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer
    from twinloop.rewards.calibrated import CalibratedReward, ReferenceSamples
    from twinloop.rewards.generative import GenerativeReward, SPCTTrainingReward
    from twinloop.rewards.pairwise import PairwiseVerifier, VerifierTrainingReward
    from twinloop.rewards.process import TokenClassifierPRM, YesNoProbePRM
    from twinloop.rewards.sandbox import CodeExecutionReward
    from twinloop.rewards.scalar import ScalarRM
    from twinloop.rewards.selfeval import SelfEvalProbe

    torch.set_num_threads(1)
    seq, tokcls, tok = head_models
    outcome = ScalarRM(model=seq, tokenizer=tok)
    rewards = [
        outcome,
        TokenClassifierPRM(model=tokcls, tokenizer=tok, delimiter=" ", aggregation="min"),
        YesNoProbePRM(hf_engine, delimiter=" "),
        GenerativeReward(hf_engine, k=1, max_tokens=4),
        PairwiseVerifier(hf_engine, max_tokens=4),
        SelfEvalProbe(hf_engine),
        CalibratedReward(ScalarRM(model=seq, tokenizer=tok),
                         ReferenceSamples(hf_engine, tmp_path / "refs.json", m=3, max_tokens=6), transform="bon", t=2.0),
        VerifierTrainingReward(),
        SPCTTrainingReward(),
        CodeExecutionReward(),
    ]
    prompts = [[{"role": "user", "content": f"What is {a} + {b}?"}] for a, b in [(1, 2), (3, 4)]]
    code = {"code_prompt": 'def add(a, b):\n    """a + b"""\n', "entry_point": "add",  # a HumanEval-style problem
            "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n"}
    ds = Dataset.from_dict({"prompt": prompts, "label_a": [1, 0], "label_b": [0, 1], "rewards": [[1, 0], [0, 1]],
                            **{k: [v, v] for k, v in code.items()}})
    cfg = GRPOConfig(output_dir=str(tmp_path / "out"), use_cpu=True, per_device_train_batch_size=4,
                     num_generations=4, max_completion_length=8, max_steps=1, learning_rate=1e-4,
                     logging_steps=1, report_to="none", save_strategy="no", bf16=False, seed=0,
                     dataloader_num_workers=0)
    trainer = GRPOTrainer(model=str(tiny_model_dir), reward_funcs=rewards, args=cfg, train_dataset=ds)
    trainer.train()

    assert trainer.state.global_step == 1
    log = trainer.state.log_history[0]
    for r in rewards:
        assert r.usage.calls >= 1 and r.usage.items >= 4, r.name
        assert math.isfinite(log[f"rewards/{r.name}/mean"]), r.name
    assert math.isfinite(log["loss"])
    assert (tmp_path / "refs.json").exists()
    # The very same objects then rank candidates in a best-of-N search through the engine.
    from twinloop.infer.search import best_of_n
    from twinloop.infer.search._common import Budget, Problem, SearchConfig

    problems = [Problem(prompts[0], {"label_a": 1, "label_b": 0, "rewards": [1, 0], **code}, id="p0")]
    for r in rewards:
        calls = r.usage.calls
        [res] = best_of_n.run(problems, hf_engine, r, Budget(n=3), SearchConfig(max_tokens=6, sampling_seed=0))
        scores = [c.score for c in res.candidates]
        assert len(scores) == 3 and res.selected is not None, r.name
        assert scores[res.selected] == max(s for s in scores if s is not None), r.name
        assert r.usage.calls == calls + 1 and res.usage.rm_calls == 3, r.name
