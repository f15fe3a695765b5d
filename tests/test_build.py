"""One spec language: every reward kind says its spec and the one builder rebuilds it with the same scores; a
reward class defined outside twinloop round-trips through export and load; the contract is checked; the
co-design recipe gives the trainer and the search one reward."""
import math

import pytest
import torch
from twinloop.rewards.base import RewardBase, call_reward, check_scores

from twinloop.build import REWARD_ALIASES, build_reward, parse_reward_spec, reward_class

PROMPT = [{"role": "user", "content": "Compute 2 + 3 * 4. Put the answer in \\boxed{}."}]
ARITH = ["3 * 4 = 12\n\n2 + 12 = 14\n\nAnswer: \\boxed{14}", "3 * 4 = 12\n\n2 + 12 = 15\n\nAnswer: \\boxed{15}",
         "no steps at all"]
COLUMNS = {"expression": ["2 + 3 * 4"] * 3, "answer": ["14"] * 3}


def _rebuilt_scores_equal(reward, prompts, completions, columns=None, **context):
    columns = columns or {}
    again = build_reward(reward.spec(), **context)
    assert type(again) is type(reward) and again.settings() == reward.settings(), reward.spec()
    assert again(prompts, completions, **columns) == reward(prompts, completions, **columns), reward.spec()
    return again


# ------------------------------------------------------------------------------ spec round trip, every kind
def test_verifiable_and_task_rewards_round_trip_through_their_spec():
    from twinloop.rewards.verifiable import (
        BoxedFormatReward,
        ExactMatchReward,
        MathReward,
        NumericReward,
        ReasoningGymReward,
        StepFormatReward,
    )

    from twinloop.tasks.arith import ArithOutcomeReward, ArithProcessReward

    prompts = [PROMPT] * 3
    for reward in (MathReward(timeout_seconds=3), NumericReward(rel_tol=1e-3), ExactMatchReward(ignore_case=False),
                   BoxedFormatReward(), StepFormatReward(min_steps=3), ArithProcessReward(aggregation="mean"),
                   ArithOutcomeReward()):
        _rebuilt_scores_equal(reward, prompts, ARITH, COLUMNS)
    mean = "twinloop.tasks.arith:ArithProcessReward(aggregation='mean')"
    assert ArithProcessReward(aggregation="mean").spec() == mean
    from twinloop.rewards.generative import SPCTTrainingReward
    from twinloop.rewards.pairwise import VerifierTrainingReward

    assert build_reward(VerifierTrainingReward(band=0.3).spec()).band == 0.3  # the training-role rewards too
    assert build_reward(SPCTTrainingReward().spec()).settings() == SPCTTrainingReward().settings()
    gym = ReasoningGymReward("basic_arithmetic")
    from twinloop.tasks import rgym

    rows = rgym.load("basic_arithmetic", split="test", n=2)
    cols = {k: [r[k] for r in rows] for k in rows[0] if k != "prompt"}
    _rebuilt_scores_equal(gym, [r["prompt"] for r in rows], [f"\\boxed{{{r['answer']}}}" for r in rows], cols)


def test_code_reward_round_trips_through_its_spec():
    from twinloop.rewards.sandbox import CodeExecutionReward

    reward = CodeExecutionReward(binary=True)
    assert build_reward(reward.spec()).settings() == reward.settings() and "binary=True" in reward.spec()


def test_model_rewards_round_trip_given_the_same_model_objects(tiny_model_dir, hf_engine):
    import transformers
    from transformers import AutoConfig, AutoTokenizer
    from twinloop.rewards.calibrated import CalibratedReward
    from twinloop.rewards.generative import GenerativeReward
    from twinloop.rewards.pairwise import PairwiseVerifier
    from twinloop.rewards.process import TokenClassifierPRM, YesNoProbePRM
    from twinloop.rewards.scalar import ScalarRM
    from twinloop.rewards.selfeval import SelfEvalProbe
    from twinloop.rewards.verifiable import MathReward

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    models = {}
    for name, labels in (("Qwen2ForSequenceClassification", 1), ("Qwen2ForTokenClassification", 2)):
        cfg = AutoConfig.from_pretrained(tiny_model_dir)
        cfg.num_labels, cfg.pad_token_id = labels, tok.pad_token_id
        torch.manual_seed(0)
        models[name] = getattr(transformers, name)(cfg).float().eval()
    prompts, texts = [PROMPT] * 2, ARITH[:2]
    _rebuilt_scores_equal(ScalarRM(model=models["Qwen2ForSequenceClassification"], tokenizer=tok, sigmoid=True),
                          prompts, texts, model=models["Qwen2ForSequenceClassification"], tokenizer=tok)
    _rebuilt_scores_equal(TokenClassifierPRM(model=models["Qwen2ForTokenClassification"], tokenizer=tok,
                                             aggregation="min"),
                          prompts, texts, model=models["Qwen2ForTokenClassification"], tokenizer=tok)
    judges = [YesNoProbePRM(hf_engine, aggregation="mean", question="\nRight?\n"),
              GenerativeReward(hf_engine, k=2, temperature=0.0, max_tokens=6, mode="group"),
              PairwiseVerifier(hf_engine, max_tokens=6, both_orders=True),
              SelfEvalProbe(hf_engine, yes="1", no="0")]
    for judge in judges:
        _rebuilt_scores_equal(judge, prompts, texts, engine=hf_engine)
    refs = {"k": ["\\boxed{14}", "\\boxed{3}", "\\boxed{14}"]}

    def references(ps):
        return [refs["k"] for _ in ps]

    calibrated = CalibratedReward(MathReward(), references, transform="bon", t=2.0)
    assert calibrated.spec() == ("twinloop.rewards.calibrated:CalibratedReward("
                                 "base='twinloop.rewards.verifiable:MathReward()', transform='bon', t=2.0)")
    _rebuilt_scores_equal(calibrated, prompts, texts, {"answer": ["14", "14"]}, context={"references": references})


def test_every_alias_names_a_twinloop_reward_class():
    for alias in REWARD_ALIASES:
        cls = reward_class(alias)
        assert issubclass(cls, RewardBase) and cls.__module__.startswith("twinloop."), alias
    assert parse_reward_spec("none") is None and parse_reward_spec("task").task
    assert dict(parse_reward_spec("arith_process(aggregation='mean')").kwargs) == {"aggregation": "mean"}


def test_spec_errors_are_one_line_and_outside_classes_need_trust():
    with pytest.raises(ValueError, match="trust_remote_code"):
        build_reward("os.path:join")
    with pytest.raises(ValueError, match="unknown reward"):
        build_reward("no_such_alias")
    with pytest.raises(ValueError, match="needs engine"):
        build_reward("pairwise")
    with pytest.raises(FileNotFoundError, match="adapter folder"):
        build_reward("grm:/nonexistent/adapter")
    with pytest.raises(ValueError, match="task"):
        build_reward("task")


# ------------------------------------------------------------------------------ a reward class from outside
class LengthJudge(RewardBase):
    """An exportable reward kind defined outside twinloop: it reads a sequence classifier's logit, scaled."""

    kinds = ("orm",)
    head = "sequence_classification"

    def __init__(self, model=None, tokenizer=None, engine=None, scale: float = 1.0) -> None:
        super().__init__()
        self.model, self.tokenizer, self.scale = model, tokenizer, scale

    def score(self, prompt, completion, **row):
        ids = self.tokenizer(prompt + completion, return_tensors="pt").input_ids
        with torch.no_grad():
            return self.scale * float(self.model(input_ids=ids).logits[0, 0])


def test_a_reward_class_outside_twinloop_round_trips_through_export_and_load(tiny_model_dir, tmp_path):
    import transformers
    from transformers import AutoConfig, AutoTokenizer
    from twinloop.checkpoints.export import export, load_reward

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = AutoConfig.from_pretrained(tiny_model_dir)
    cfg.num_labels, cfg.architectures, cfg.pad_token_id = 1, ["Qwen2ForSequenceClassification"], tok.pad_token_id
    torch.manual_seed(3)
    model = transformers.Qwen2ForSequenceClassification(cfg).float().eval()
    model.save_pretrained(tmp_path / "src")
    tok.save_pretrained(tmp_path / "src")
    before = LengthJudge(model=model, tokenizer=tok, scale=2.5)
    out = export(tmp_path / "src", tmp_path / "judge", "orm", reward=before)
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_reward(out)
    after = load_reward(out, trust_remote_code=True)
    assert type(after) is LengthJudge and after.scale == 2.5 and after.spec() == str(out)
    texts = ["a", "a longer answer"]
    # two loads of the same weights in one process: CPU float reductions agree to well within 1e-5
    assert after(["q"] * 2, texts) == pytest.approx(before(["q"] * 2, texts), abs=1e-5)
    assert build_reward(str(out), trust_remote_code=True).scale == 2.5
    # a classifier bundle loads its own weights even when eval passes the policy engine (judges use it)
    on_eval = build_reward(str(out), trust_remote_code=True, engine=object())
    assert on_eval.model is not None and on_eval(["q"] * 2, texts) == pytest.approx(after(["q"] * 2, texts), abs=1e-5)


# ------------------------------------------------------------------------------ the contract, checked
class _Broken(RewardBase):
    def __init__(self, returns=None) -> None:
        super().__init__()
        self.returns = returns

    def __call__(self, prompts, completions, **columns):
        return self.returns


def test_a_reward_breaking_the_contract_fails_in_one_line_naming_it():
    with pytest.raises(ValueError, match=r"reward reward returned 1 scores for a batch of 2 completions"):
        _Broken([0.5])(["p", "p"], ["a", "b"])
    with pytest.raises(ValueError, match="non-finite"):
        _Broken([0.5, math.nan])(["p", "p"], ["a", "b"])
    with pytest.raises(ValueError, match="non-finite or non-numeric"):
        _Broken([0.5, "x"])(["p", "p"], ["a", "b"])
    assert _Broken([0.5, None])(["p", "p"], ["a", "b"]) == [0.5, None]

    def plain(prompts, completions, **kw):  # TRL would broadcast this silently
        return [1.0]

    with pytest.raises(ValueError, match="reward plain returned 1 scores for a batch of 3"):
        call_reward(plain, ["p"] * 3, ["a"] * 3)
    assert check_scores(plain, [1, 0.5], 2) == [1, 0.5]
    from twinloop.rewards.base import checked

    wrapped = checked(plain)  # what GPPO hands TRL for a plain-function reward
    assert wrapped.__name__ == "plain"
    with pytest.raises(ValueError, match="batch of 2"):
        wrapped(["p"] * 2, ["a"] * 2)


# ------------------------------------------------------------------------------ one co-design recipe
def test_codesign_recipe_gives_train_and_search_one_reward():
    """recipes/arith/process.yaml names its reward once: the GPPO trainer's reward and eval's search reward are
    built from the same spec and score a fixed batch identically."""
    from pathlib import Path

    from twinloop.infer.eval_config import parse_eval_args
    from twinloop.train.gppo import build_rewards, parse

    recipe = str(Path(__file__).resolve().parents[1] / "recipes/arith/process.yaml")
    script, cfg = parse(["--config", recipe])
    (trained_with,) = build_rewards(script)
    opts = parse_eval_args(["--recipe", recipe])  # the dataclass parser, as the trainers read theirs
    searched_with = build_reward(opts["reward"], task=opts["task"], engine=object())
    assert opts["task"] == script.task == "arith"
    assert trained_with.spec() == searched_with.spec() == "twinloop.tasks.arith:ArithProcessReward(aggregation='mean')"
    batch = ([PROMPT] * 3, ARITH)
    assert trained_with(*batch, **COLUMNS) == searched_with(*batch, **COLUMNS)
    assert cfg.max_steps == 400 and opts["methods"] and opts["budgets"]
