"""GPPO loss maths against the worked gradients of ALGORITHMS.md (ε_l = 0.2, ε_h = 0.28, ΣT = 1)."""
import math

import pytest
import torch
from twinloop.train.losses import (
    clip_stats,
    clipped_ratio,
    nonzero_std_groups,
    policy_per_token_loss,
    positive_nll,
    token_mean,
)

# (Â, δ, PPO/GRPO gradient, GPPO gradient, unclipped gradient) of dL/dlogπ, from the ALGORITHMS.md table
WORKED_ROWS = [
    (+1.0, 1.5, 0.0, -1.28, -1.5),
    (-1.0, 0.5, 0.0, +0.8, +0.5),
    (-1.0, 1.5, +1.5, +1.5, +1.5),
    (-1.0, 12.0, 0.0, 0.0, +12.0),
]


def _grad(adv, ratio, mode, dual_clip=10.0, **kw):
    old = torch.zeros(1, 1, dtype=torch.float64)
    logp = torch.full((1, 1), math.log(ratio), dtype=torch.float64, requires_grad=True)
    mask = torch.ones(1, 1, dtype=torch.float64)
    if mode == "unclipped":
        per_tok = -torch.tensor([[adv]], dtype=torch.float64) * torch.exp(logp - old)
    else:
        per_tok = policy_per_token_loss(logp, old, torch.tensor([adv], dtype=torch.float64), mode=mode,
                                        dual_clip=dual_clip, **kw)
    token_mean(per_tok, mask).backward()
    return logp.grad.item()


@pytest.mark.parametrize("adv,ratio,ppo,gppo,unclipped", WORKED_ROWS)
def test_worked_gradient_rows(adv, ratio, ppo, gppo, unclipped):
    assert _grad(adv, ratio, "gppo") == pytest.approx(gppo, abs=1e-12)
    assert _grad(adv, ratio, "ppo") == pytest.approx(ppo, abs=1e-12)
    assert _grad(adv, ratio, "unclipped") == pytest.approx(unclipped, abs=1e-12)


def test_gppo_sends_gradient_where_ppo_clips_to_zero():
    for adv, ratio in [(+1.0, 1.5), (-1.0, 0.5), (+2.0, 3.0), (-0.5, 0.1)]:
        assert _grad(adv, ratio, "ppo") == 0.0
        assert _grad(adv, ratio, "gppo") != 0.0


def test_forward_value_equals_clip_higher_ppo():
    torch.manual_seed(0)
    logp, old = torch.randn(6, 9, dtype=torch.float64), torch.randn(6, 9, dtype=torch.float64)
    adv = torch.randn(6, dtype=torch.float64)
    for dual in (None, 10.0, 2.0):
        for beta1 in (1.0, 0.25):
            g = policy_per_token_loss(logp, old, adv, mode="gppo", dual_clip=dual, beta1=beta1)
            p = policy_per_token_loss(logp, old, adv, mode="ppo", dual_clip=dual)
            torch.testing.assert_close(g, p, rtol=0, atol=1e-12)


def test_beta_scales_only_the_clipped_gradient():
    # code default β₁ = 0.25: below the trust region, F = β₁(1-ε_l) = 0.2
    assert _grad(-1.0, 0.5, "gppo", beta1=0.25) == pytest.approx(0.25 * 0.8)
    assert _grad(+1.0, 1.5, "gppo", beta2=0.5) == pytest.approx(-0.5 * 1.28)
    assert _grad(-1.0, 1.5, "gppo", beta1=0.25) == pytest.approx(1.5)  # unclipped region: δ
    assert clipped_ratio(torch.tensor([0.5]), beta1=0.25).item() == pytest.approx(0.8)


def test_gradient_scales_with_advantage_and_token_count():
    # -F·Â/ΣT: two tokens of the same (clipped) kind, mean over ΣT = 2
    old = torch.zeros(1, 2, dtype=torch.float64)
    logp = torch.log(torch.tensor([[1.5, 1.0]], dtype=torch.float64)).requires_grad_()
    loss = token_mean(policy_per_token_loss(logp, old, torch.tensor([3.0], dtype=torch.float64)), torch.ones(1, 2))
    loss.backward()
    assert logp.grad.tolist()[0] == pytest.approx([-1.28 * 3 / 2, -1.0 * 3 / 2])


def test_dual_clip_caps_negative_advantage_loss():
    old = torch.zeros(1, 1)
    logp = torch.log(torch.tensor([[12.0]]))
    assert policy_per_token_loss(logp, old, torch.tensor([-1.0])).item() == pytest.approx(10.0)
    assert policy_per_token_loss(logp, old, torch.tensor([-1.0]), dual_clip=None).item() == pytest.approx(12.0)
    with pytest.raises(ValueError, match="dual_clip"):
        policy_per_token_loss(logp, old, torch.tensor([-1.0]), dual_clip=0.5)
    with pytest.raises(ValueError, match="clip mode"):
        clipped_ratio(torch.ones(1), mode="nope")


def test_token_mean_masks_and_uses_global_count():
    v = torch.tensor([[1.0, 2.0, 100.0], [3.0, 100.0, 100.0]])
    m = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert token_mean(v, m).item() == pytest.approx(2.0)
    assert token_mean(v, m, num_tokens=6).item() == pytest.approx(1.0)
    assert token_mean(v, torch.zeros_like(m)).item() == 0.0


def test_positive_nll_only_counts_positive_samples():
    logp = torch.tensor([[-1.0, -3.0], [-5.0, -7.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    assert positive_nll(logp, mask, torch.tensor([True, False])).item() == pytest.approx(2.0)
    assert positive_nll(logp, mask, torch.tensor([False, True])).item() == pytest.approx(5.0)
    assert positive_nll(logp, mask, torch.tensor([False, False])).item() == 0.0


def test_nonzero_std_group_filter():
    r = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, float("nan"), 1.0, float("nan"), float("nan")])
    keep = nonzero_std_groups(r, 3)
    assert keep.tolist() == [False] * 3 + [True] * 3 + [False] * 3 + [False] * 3
    assert nonzero_std_groups(torch.tensor([0.2, 0.2, 0.5, float("nan")]), 4).tolist() == [True] * 4
    with pytest.raises(ValueError, match="groups of 4"):
        nonzero_std_groups(torch.zeros(6), 4)


def test_clip_stats_fractions():
    logp = torch.log(torch.tensor([[1.5, 0.5, 12.0, 1.0]]))
    adv = torch.tensor([[1.0, -1.0, -1.0, 1.0]])
    s = clip_stats(logp, torch.zeros(1, 4), adv, torch.ones(1, 4))
    assert (s.low, s.high, s.dual) == (pytest.approx(0.25), pytest.approx(0.25), pytest.approx(0.25))
