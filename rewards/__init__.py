"""twinloop.rewards: every reward definition, each a callable with TRL's reward signature.

``reward(prompts, completions, **columns) -> list[float | None]``; the same object is passed to
``trl.GRPOTrainer(reward_funcs=[...])`` and to ``twinloop.infer.search`` procedures. Kinds live in their own
modules (verifiable, sandbox, scalar, process, generative, pairwise, selfeval, calibrated); every reward
describes itself (``kinds``, ``head``, ``settings()``, ``spec()``) and ``twinloop.build.build_reward`` turns a
spec back into the object. Rewards never import the engines: a model judge takes any object satisfying
``twinloop.contracts.Engine``.
"""
from twinloop.rewards.base import ProcessReward, Reward, RewardBase, RewardUsage, message_text

# The one plain alias dict: the short names users type, each standing for a spec.
REWARD_ALIASES: dict[str, str] = {
    "math": "twinloop.rewards.verifiable:MathReward()",
    "numeric": "twinloop.rewards.verifiable:NumericReward()",
    "exact": "twinloop.rewards.verifiable:ExactMatchReward()",
    "boxed_format": "twinloop.rewards.verifiable:BoxedFormatReward()",
    "step_format": "twinloop.rewards.verifiable:StepFormatReward()",
    "code": "twinloop.rewards.sandbox:CodeExecutionReward()",
    "arith_process": "twinloop.tasks.arith:ArithProcessReward()",
    "arith_outcome": "twinloop.tasks.arith:ArithOutcomeReward()",
    "orm": "twinloop.rewards.scalar:ScalarRM()",
    "meta": "twinloop.rewards.scalar:ScalarRM()",
    "prm": "twinloop.rewards.process:TokenClassifierPRM()",
    "prm_probe": "twinloop.rewards.process:YesNoProbePRM()",
    "grm": "twinloop.rewards.generative:GenerativeReward(mode='group')",
    "pairwise": "twinloop.rewards.pairwise:PairwiseVerifier()",
    "selfeval": "twinloop.rewards.selfeval:SelfEvalProbe()",
    # no-oracle arithmetic verifiers on the policy engine (rewards/recompute.py, rewards/operands.py)
    "recompute": "twinloop.tasks._arith_routes:ArithRecomputeReward()",
    "operands": "twinloop.tasks._arith_routes:ArithOperandsReward()",
    "recompute+operands": "twinloop.tasks._arith_routes:ArithRecomputeOperandsReward()",
}


__all__ = ["REWARD_ALIASES", "ProcessReward", "Reward", "RewardBase", "RewardUsage", "message_text"]
