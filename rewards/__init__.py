"""twinloop.rewards: every reward definition, each a callable with TRL's reward signature.

``reward(prompts, completions, **columns) -> list[float | None]``; the same object is passed to
``trl.GRPOTrainer(reward_funcs=[...])`` and to ``twinloop.infer.search`` procedures. Kinds live in their own
modules (verifiable, sandbox, scalar, process, generative, pairwise, selfeval, calibrated).
"""
from twinloop.rewards.base import ProcessReward, Reward, RewardBase, RewardUsage, message_text


def load(folder, **kwargs):
    """Load an exported reward folder (``twinloop export``) back as the same Reward object.

    Imported lazily: checkpoints depends on rewards, not the other way round.
    """
    from twinloop.checkpoints.export import load_reward

    return load_reward(folder, **kwargs)


__all__ = ["ProcessReward", "Reward", "RewardBase", "RewardUsage", "load", "message_text"]
