"""Process RMs: step splitting, aggregation, step-end reading, the Yes/No probe, and the real backends."""
import math

import pytest
from twinloop.rewards.base import ProcessReward
from twinloop.rewards.process import (
    TokenClassifierPRM,
    YesNoProbePRM,
    aggregate,
    build_step_inputs,
    split_step_ids,
    split_steps,
    two_way_probability,
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_split_steps_and_ids():
    assert split_steps("1 + 2 = 3\n\n3 * 4 = 12\n\nAnswer: 12") == ["1 + 2 = 3", "3 * 4 = 12", "Answer: 12"]
    assert split_steps("a\n\n\n\n b \n\n  ") == ["a", " b "]
    assert split_steps("a;b", ";") == ["a", "b"]
    assert split_steps("") == []
    assert split_step_ids([5, 6, 9, 7, 9, 9, 8], 9) == [[5, 6], [7], [8]]
    with pytest.raises(ValueError):
        split_steps("a", "")


def test_aggregate_numbers():
    s = [0.9, 0.5, 0.8]
    assert aggregate(s, "last") == 0.8
    assert aggregate(s, "min") == 0.5
    assert aggregate(s, "prod") == pytest.approx(0.36)
    assert aggregate(s, "mean") == pytest.approx(2.2 / 3)
    with pytest.raises(ValueError):
        aggregate(s, "max")
    assert aggregate([], "last") == aggregate([], "min") == 0.0  # no step yet: one behaviour everywhere


def test_two_way_probability():
    assert two_way_probability(math.log(0.3), math.log(0.1)) == pytest.approx(0.75)
    assert two_way_probability(-math.inf, -1.0) == 0.0
    assert two_way_probability(-math.inf, float("nan")) is None


def test_build_step_inputs_marks_each_step_tag(tokenizer):
    tag = tokenizer("\n\n", add_special_tokens=False).input_ids
    ids, positions = build_step_inputs(tokenizer, "Q: 1+2*3?", ["2*3 = 6", "1+6 = 7"], tag)
    assert len(positions) == 2 and positions[-1] == len(ids) - 1
    for p in positions:
        assert ids[p - len(tag) + 1: p + 1] == tag
    assert tokenizer.decode(ids[: positions[0] + 1]).endswith("2*3 = 6\n\n")


class PositionLogitEngine:
    """token_classify returns, at every position t, one logit equal to t/10 (so reads reveal positions)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.seen = []

    def token_classify(self, prompts):
        self.seen.extend(prompts)
        return [[[t / 10] for t in range(len(p))] for p in prompts]


def test_token_classifier_reads_step_ends_and_aggregates(tokenizer):
    eng = PositionLogitEngine(tokenizer)
    prm = TokenClassifierPRM(engine=eng, aggregation="min")
    assert isinstance(prm, ProcessReward)
    [scores] = prm.step_scores(["Q"], [["a = 1", "b = 2"]])
    _, positions = build_step_inputs(tokenizer, "Q", ["a = 1", "b = 2"], prm.tag_ids)
    assert scores == pytest.approx([1 / (1 + math.exp(-p / 10)) for p in positions])
    chat = [{"role": "user", "content": "Q"}]
    out = prm(["Q", chat, "Q"], ["a = 1\n\nb = 2", [{"role": "assistant", "content": "a = 1"}], "   "])
    assert out[0] == pytest.approx(scores[0]) and 0 < out[1] < 1
    assert out[2] == 0.0 and prm.usage.unparseable == 1  # no step: documented fallback
    with pytest.raises(ValueError):
        TokenClassifierPRM(engine=eng, aggregation="median")
    with pytest.raises(ValueError):
        TokenClassifierPRM()


class TagRowsEngine(PositionLogitEngine):
    """Like vLLM's native PRM pooler: rows only at step-tag positions (here logits 0.1, 0.2, ...)."""

    def __init__(self, tokenizer, n_steps):
        super().__init__(tokenizer)
        self.n_steps = n_steps

    def token_classify(self, prompts):
        return [[[-5.0, (k + 1) / 10] for k in range(self.n_steps)] for _ in prompts]


def test_step_tag_pooler_rows_are_taken_in_order(tokenizer):
    [scores] = TokenClassifierPRM(engine=TagRowsEngine(tokenizer, 2)).step_scores(["Q"], [["a", "b"]])
    assert scores == pytest.approx([math.exp(x) / (math.exp(x) + math.exp(-5.0)) for x in (0.1, 0.2)])


def test_token_id_delimiter(tokenizer):
    tag_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    prm = TokenClassifierPRM(engine=PositionLogitEngine(tokenizer), delimiter=tag_id)
    assert prm.split("a = 1<|endoftext|>b = 2<|endoftext|>") == ["a = 1", "b = 2"]
    assert prm.tag_ids == [tag_id]


class ScriptedProbeEngine:
    """next_token_logprobs gives P(Yes) = 0.8 when the prefix's last step contains '= 7', else 0.2."""

    def __init__(self, tokenizer, question):
        self.tokenizer, self.question, self.prefixes = tokenizer, question, []

    def next_token_logprobs(self, prefixes, token_ids, lora=None):
        out = []
        for p in prefixes:
            text = self.tokenizer.decode(p)
            assert text.endswith(self.question)
            last_step = text[: -len(self.question)].rstrip("\n").split("\n\n")[-1]
            p_yes = 0.8 if "= 7" in last_step else 0.2
            out.append([math.log(p_yes) - 3.0, math.log(1 - p_yes) - 3.0])  # unnormalised: renormalised
        self.prefixes.extend(prefixes)
        return out


def test_yes_no_probe_prm(tokenizer):
    from twinloop.rewards.process import PROBE_QUESTION

    eng = ScriptedProbeEngine(tokenizer, PROBE_QUESTION)
    prm = YesNoProbePRM(eng, aggregation="prod")
    out = prm(["Q", "Q"], ["1+6 = 7\n\n7*2 = 14", "1+6 = 7"])
    assert out == pytest.approx([0.8 * 0.2, 0.8])
    assert prm.usage.model_calls == 3 and len(eng.prefixes) == 3


def test_probe_prm_real_engines_agree(vllm_engine, hf_engine):
    prompts, steps = ["What is 1 + 2 * 3?"], [["2 * 3 = 6", "1 + 6 = 7", "The answer is 7."]]
    v = YesNoProbePRM(vllm_engine).step_scores(prompts, steps)
    h = YesNoProbePRM(hf_engine).step_scores(prompts, steps)
    assert len(v[0]) == 3 and all(0.0 < x < 1.0 for x in v[0])
    assert v[0] == pytest.approx(h[0], abs=1e-4)


@pytest.fixture(scope="session")
def token_classifier_dir(tiny_model_dir, tmp_path_factory):
    import torch
    from transformers import AutoConfig, AutoTokenizer, Qwen2ForTokenClassification

    cfg = AutoConfig.from_pretrained(tiny_model_dir)
    cfg.num_labels, cfg.architectures = 2, ["Qwen2ForTokenClassification"]
    torch.manual_seed(3)
    out = tmp_path_factory.mktemp("prm") / "tokcls"
    Qwen2ForTokenClassification(cfg).float().save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def token_pooling_engine(token_classifier_dir):
    """Closed only at session end: closing an in-process vLLM engine tears down the parallel state that the
    session's other engines share."""
    from twinloop.infer.vllm_engine import VLLMEngine

    eng = VLLMEngine(str(token_classifier_dir), dtype="float32", max_model_len=512, runner="pooling")
    yield eng
    eng.close()


def test_token_classifier_transformers_and_vllm_agree(token_classifier_dir, token_pooling_engine):
    prompts = ["What is 1 + 2 * 3?", [{"role": "user", "content": "What is 4 - 1?"}]]
    completions = ["2 * 3 = 6\n\n1 + 6 = 7\n\nThe answer is 7.", "4 - 1 = 3\n\nThe answer is 3."]
    hf = TokenClassifierPRM.from_pretrained(str(token_classifier_dir), aggregation="mean")
    steps = [hf.split(c) for c in completions]
    hf_scores = hf.step_scores(prompts, steps)
    vl = TokenClassifierPRM(engine=token_pooling_engine, aggregation="mean")
    vl_scores = vl.step_scores(prompts, steps)
    assert vl(prompts, completions) == pytest.approx(hf(prompts, completions), abs=1e-4)
    assert [len(s) for s in hf_scores] == [3, 2]
    for a, b in zip(hf_scores, vl_scores):
        assert a == pytest.approx(b, abs=1e-4)
