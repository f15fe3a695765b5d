"""A classifier reward bundle (token-classification PRM) given the policy's generate engine -- what ``twinloop
eval --reward BUNDLE`` passes -- loads its own weights; it runs on a given engine only when that engine pools."""
import pytest
import torch
from twinloop.checkpoints.export import export, load_reward, serves_classifier

from twinloop.build import build_reward

PROMPTS = ["What is 2 + 3?", "What is 7 * 8?"]
STEPS = [["2 + 3 = 5", "Answer: \\boxed{5}"], ["7 * 8 = 56", "Answer: \\boxed{57}"]]


@pytest.fixture(scope="module")
def prm_bundle(tiny_model_dir, tmp_path_factory):
    from transformers import AutoConfig, AutoTokenizer, Qwen2ForTokenClassification

    root = tmp_path_factory.mktemp("prm-bundle")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = AutoConfig.from_pretrained(tiny_model_dir)
    cfg.num_labels, cfg.architectures, cfg.pad_token_id = 2, ["Qwen2ForTokenClassification"], tok.pad_token_id
    torch.manual_seed(5)
    Qwen2ForTokenClassification(cfg).float().save_pretrained(root / "src")
    tok.save_pretrained(root / "src")
    return export(root / "src", root / "prm", "prm", settings={"aggregation": "min"})


class PoolingStandIn:
    """A pooling engine (as a vLLM pooling runner answers): token logits from the bundle's own model, counted."""

    runner = "pooling"

    def __init__(self, folder):
        from transformers import AutoModelForTokenClassification, AutoTokenizer

        self.model = AutoModelForTokenClassification.from_pretrained(folder).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.calls = 0

    def token_classify(self, sequences):
        self.calls += 1
        with torch.no_grad():
            return [self.model(input_ids=torch.tensor([ids])).logits[0].tolist() for ids in sequences]


def test_a_prm_bundle_on_the_policy_vllm_engine_loads_its_own_weights(prm_bundle, vllm_engine):
    from twinloop.eval_cli import reward_for

    assert vllm_engine.runner == "generate" and not serves_classifier(vllm_engine, "token_classification")
    own = load_reward(prm_bundle).step_scores(PROMPTS, STEPS)
    for reward in (build_reward(str(prm_bundle), engine=vllm_engine), load_reward(prm_bundle, engine=vllm_engine),
                   reward_for(str(prm_bundle), "arith", vllm_engine)):
        assert reward.engine is None and reward.model is not None
        # two loads of the same weights in one process: CPU float reductions agree to well within 1e-5
        assert reward.step_scores(PROMPTS, STEPS) == [pytest.approx(row, abs=1e-5) for row in own]
    # settings given with the bundle still apply on that path
    mean = build_reward(f"{prm_bundle}(aggregation='mean')", engine=vllm_engine)
    assert mean.engine is None and mean.settings()["aggregation"] == "mean"


def test_a_pooling_engine_given_with_the_bundle_is_used(prm_bundle):
    pooled = PoolingStandIn(prm_bundle)
    assert serves_classifier(pooled, "token_classification")
    assert not serves_classifier(pooled, "sequence_classification")  # it has no classify(): wrong head
    reward = build_reward(str(prm_bundle), engine=pooled)
    assert reward.engine is pooled
    scores = reward.step_scores(PROMPTS, STEPS)
    assert pooled.calls == 1
    own = load_reward(prm_bundle).step_scores(PROMPTS, STEPS)
    assert scores == [pytest.approx(row, abs=1e-5) for row in own]
