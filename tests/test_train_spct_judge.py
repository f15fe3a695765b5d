"""The separate SPCT judge: phrase tokens that make a best-of-8 GRM prompt fit, their embedding rows, one-step hard
negatives, and a full-weights GRM bundle that never runs on the policy's engine."""
import random
from pathlib import Path

import pytest
from twinloop.rewards.generative import format_grm_prompt
from twinloop.train.spct_data import Item, template_judgment, truth_reward
from twinloop.train.spct_judge import build_judge_model, judge_phrases, one_step_negative

REPO = Path(__file__).resolve().parents[1]
POLICY = str(REPO / "checkpoints" / "tiny-arith-policy")
EXPR = "(17 + 25) * 3 - 40"
GOOD = "17 + 25 = 42\n\n42 * 3 = 126\n\n126 - 40 = 86\n\nAnswer: \\boxed{86}"


@pytest.fixture(scope="module")
def judge0(tmp_path_factory):
    return build_judge_model(POLICY, tmp_path_factory.mktemp("judge") / "judge0")


def _n_tokens(tok, prompt, judgment):
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    return len(ids) + len(tok(judgment, add_special_tokens=False).input_ids)


def test_phrase_tokens_make_a_best_of_8_judgment_fit_1024(judge0):
    from twinloop.train.common import load_tokenizer

    policy_tok, judge_tok = load_tokenizer(POLICY), load_tokenizer(str(judge0))
    rng = random.Random(0)
    responses = [GOOD] + [one_step_negative(GOOD, rng) for _ in range(7)]
    prompt = format_grm_prompt(f"Compute {EXPR} step by step.", responses)
    judgment = template_judgment(EXPR, responses, [truth_reward(EXPR, r) + 1e-3 * i for i, r in enumerate(responses)])
    assert _n_tokens(policy_tok, prompt, judgment) > 1024  # the policy's own BPE: over its context
    assert _n_tokens(judge_tok, prompt, judgment) < 600
    for phrase in judge_phrases():  # each one token, and text round-trips
        assert len(judge_tok(phrase, add_special_tokens=False).input_ids) == 1
    ids = judge_tok(judgment, add_special_tokens=False).input_ids
    assert judge_tok.decode(ids) == judgment
    # the responses themselves (digits, operators) tokenize as the policy reads them
    assert judge_tok(GOOD, add_special_tokens=False).input_ids == policy_tok(GOOD, add_special_tokens=False).input_ids


def test_new_embedding_rows_are_the_mean_of_their_pieces(judge0):
    import torch
    from transformers import AutoModelForCausalLM
    from twinloop.train.common import load_tokenizer

    policy = AutoModelForCausalLM.from_pretrained(POLICY, dtype=torch.float32)
    judge = AutoModelForCausalLM.from_pretrained(str(judge0), dtype=torch.float32)
    tok, judge_tok = load_tokenizer(POLICY), load_tokenizer(str(judge0))
    old = policy.get_input_embeddings().weight
    new = judge.get_input_embeddings().weight
    assert torch.equal(new[:old.shape[0]], old)
    phrase = "\nAnalysis:"
    pieces = tok(phrase, add_special_tokens=False).input_ids
    assert len(pieces) > 3
    row = new[judge_tok.convert_tokens_to_ids(phrase)]
    assert torch.allclose(row, old[pieces].mean(0), atol=1e-6)
    assert torch.equal(judge.get_output_embeddings().weight, new)  # tied: the output row is the same


def test_one_step_negative_changes_one_step_and_lowers_the_truth():
    rng = random.Random(1)
    for _ in range(20):
        neg = one_step_negative(GOOD, rng)
        diff = [(a, b) for a, b in zip(GOOD.split("\n"), neg.split("\n")) if a != b]
        assert len(diff) == 1 and "boxed" not in diff[0][0]
        assert truth_reward(EXPR, neg) < truth_reward(EXPR, GOOD) == 1.0
    assert one_step_negative("Answer: \\boxed{86}", rng) is None


def test_add_hard_negatives_keeps_one_unique_best():
    from twinloop.train.spct import add_hard_negatives

    bad = "17 + 25 = 42\n\n42 * 3 = 124\n\n124 - 40 = 84\n\nAnswer: \\boxed{84}"
    items = [Item(f"q{i}", EXPR, [bad, GOOD, "no steps"], [truth_reward(EXPR, bad), 1.0, 0.0]) for i in range(10)]
    items.append(Item("single", EXPR, [GOOD], [1.0]))
    done = add_hard_negatives(items, 1.0, lambda it: True, random.Random(0))
    assert done == 10 and items[-1].responses == [GOOD]
    for it in items[:10]:
        slot = it.meta["hard_negative"]
        assert slot != 1 and it.best == 1 and it.responses[1] == GOOD
        assert it.rewards[slot] == truth_reward(EXPR, it.responses[slot]) < 1.0
        assert sum(r == max(it.rewards) for r in it.rewards) == 1
    assert add_hard_negatives(items, 1.0, lambda it: False, random.Random(0)) == 0


def test_a_full_weights_bundle_does_not_run_on_another_models_engine(judge0, tmp_path):
    from twinloop.checkpoints.export import _serves_other_model

    class Engine:
        def __init__(self, model):
            self.model = model

    assert _serves_other_model(Engine(POLICY), judge0)
    assert not _serves_other_model(Engine(str(judge0)), judge0)
    assert not _serves_other_model(Engine("served-name"), judge0)  # a served engine that does not say: trusted
    assert not _serves_other_model(object(), judge0)
