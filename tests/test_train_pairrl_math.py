"""V1-PairRL pure maths: pair formation, the 0.2-band verify reward, the mean baseline, scattering, J."""
import random

import pytest
import torch
from twinloop.train.pairrl_math import (
    VerifyPair,
    combined_loss,
    correctness_labels,
    cross_rank_fraction,
    form_pairs,
    mean_baseline_advantages,
    pairwise_accuracy,
    scatter_slots,
    verify_rewards,
)


def test_labels_threshold_and_unscorable():
    assert correctness_labels([1.0, 0.0, 0.99, None, float("nan"), 2.0]) == [1, 0, 0, None, None, 1]
    assert correctness_labels([0.5, 0.4], threshold=0.5) == [1, 0]


def test_pairs_need_a_correct_solution_and_stay_in_their_group():
    # group 0: solutions 0,1 correct, 2,3 wrong; group 1: all wrong; group 2: only 10 correct, 11 unscorable
    labels = [1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, None]
    pairs = form_pairs(labels, 4, max_prompts_per_problem=10, rng=random.Random(3))
    by_group = {}
    for p in pairs:
        assert p.label_a or p.label_b
        assert p.a // 4 == p.b // 4 == p.group and p.a != p.b
        by_group.setdefault(p.group, set()).add(frozenset((p.a, p.b)))
    # all 5 eligible pairs of group 0 (not {2,3}); none of group 1; {10,8} and {10,9} of group 2 (11 unscorable)
    assert by_group[0] == {frozenset(s) for s in [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3)]}
    assert 1 not in by_group
    assert by_group[2] == {frozenset((8, 10)), frozenset((9, 10))}
    assert [(p.label_a, p.label_b) for p in pairs] == [(labels[p.a], labels[p.b]) for p in pairs]


def test_pair_cap_per_problem_and_random_orders():
    labels = [1, 0, 1, 0, 1, 0, 1, 0]  # one group of 8: 28 pairs, 22 eligible
    pairs = form_pairs(labels, 8, max_prompts_per_problem=4, rng=random.Random(0))
    assert len(pairs) == 4 and len({frozenset((p.a, p.b)) for p in pairs}) == 4
    # over many draws the shown order is swapped about half the time
    swapped = sum(p.a > p.b for s in range(200)
                  for p in form_pairs(labels, 8, max_prompts_per_problem=4, rng=random.Random(s)))
    assert 300 < swapped < 500


def test_both_orders_shows_each_pair_twice_within_the_cap():
    pairs = form_pairs([1, 0, 0, 1], 4, max_prompts_per_problem=4, order="both", rng=random.Random(1))
    assert len(pairs) == 4
    assert pairs[0].a == pairs[1].b and pairs[0].b == pairs[1].a
    assert pairs[2].a == pairs[3].b and pairs[2].b == pairs[3].a
    with pytest.raises(ValueError, match="max_prompts_per_problem"):
        form_pairs([1, 0], 2, max_prompts_per_problem=1, order="both")
    with pytest.raises(ValueError, match="groups"):
        form_pairs([1, 0, 1], 2)
    with pytest.raises(ValueError, match="order"):
        form_pairs([1, 0], 2, order="sorted")


def test_pairs_are_reproducible_from_the_seed():
    labels = [1, 0, 1, 0] * 3
    assert form_pairs(labels, 4, rng=random.Random(7)) == form_pairs(labels, 4, rng=random.Random(7))


def test_verify_reward_worked_example_and_band():
    p = VerifyPair(0, 0, 1, 1, 0)
    # ALGORITHMS.md: A correct rated 9, B wrong rated 3 -> v = (0.889, 0.222): r = ½(0.889 + 0) = 0.444
    assert verify_rewards([(9, 3)], [p]) == pytest.approx([0.5 * 8 / 9])
    assert verify_rewards([(10, 1)], [p]) == [1.0]
    assert verify_rewards([(9, 2)], [p]) == pytest.approx([0.5 * (8 / 9 + 8 / 9)])
    assert verify_rewards([(5, 5), None], [p, p]) == [0.0, 0.0]  # the safe middle earns nothing
    with pytest.raises(ValueError):
        verify_rewards([(9, 3)], [p, p])


def test_mean_baseline_over_all_verify_prompts():
    assert mean_baseline_advantages([0.4, 0.0, 1.0, 0.2]) == pytest.approx([0.0, -0.4, 0.6, -0.2])
    # padding slots (weight 0) stay out of the mean and get no advantage
    assert mean_baseline_advantages([1.0, 0.0, 0.7], [1, 1, 0]) == pytest.approx([0.5, -0.5, 0.0])
    assert mean_baseline_advantages([0.3], [0]) == [0.0]


def test_scatter_slots_equal_lengths_with_padding():
    assert scatter_slots(5, 2) == [[0, 1, 2], [3, 4, None]]
    assert scatter_slots(3, 2, multiple=2) == [[0, 1], [2, None]]
    assert scatter_slots(1, 2) == [[0], [None]]
    assert scatter_slots(0, 2) == [[], []]
    slots = scatter_slots(7, 3, multiple=2)
    assert {len(s) for s in slots} == {4} and sorted(k for s in slots for k in s if k is not None) == list(range(7))


def test_pairwise_accuracy_and_cross_rank_fraction():
    pairs = [VerifyPair(0, 0, 3, 1, 0), VerifyPair(0, 2, 1, 0, 1), VerifyPair(0, 0, 1, 1, 1),
             VerifyPair(0, 1, 3, 1, 0)]
    ratings = [(8, 2), (9, 3), (7, 7), None]
    # mixed pairs: right, wrong, unparseable (½); the correct-correct pair does not count
    assert pairwise_accuracy(ratings, pairs) == pytest.approx(1.5 / 3)
    assert pairwise_accuracy([(1, 1)], [VerifyPair(0, 0, 1, 1, 1)]) is None
    assert cross_rank_fraction(pairs, per_rank=2) == pytest.approx(3 / 4)  # only (0, 1) stays on rank 0
    assert cross_rank_fraction([], per_rank=2) == 0.0


def test_combined_objective_token_means_each_role_then_adds():
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [10.0, 20.0, 30.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    is_verify = torch.tensor([0, 0, 1])
    total, gen, verify = combined_loss(per_token, mask, is_verify, gen_tokens=3, verify_tokens=3, verify_coef=0.5)
    assert gen.item() == pytest.approx((1 + 2 + 4) / 3)
    assert verify.item() == pytest.approx((10 + 20 + 30) / 3)
    assert total.item() == pytest.approx(7 / 3 + 0.5 * 20)
    # global token counts (other processes' tokens) divide instead of the local ones
    _, gen, verify = combined_loss(per_token, mask, is_verify, gen_tokens=7, verify_tokens=6)
    assert (gen.item(), verify.item()) == pytest.approx((1.0, 10.0))
    # no verify rows: the verify part is 0, not NaN
    total, _, verify = combined_loss(per_token[:2], mask[:2], is_verify[:2], 3, 0)
    assert verify.item() == 0.0 and total.item() == pytest.approx(7 / 3)


def test_importance_ratio_modes():
    from twinloop.train.pairrl_math import importance_ratio

    old = torch.tensor([[0.0, -1.0, -2.0]])
    sampled = torch.tensor([[-0.5, -1.0, float("nan")]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    e = torch.exp(torch.tensor(0.5)).item()
    assert importance_ratio(old, sampled, mask, "token_truncate", None, 3.0)[0].tolist() == pytest.approx([e, 1, 1])
    assert importance_ratio(old, sampled, mask, "token_truncate", None, 1.5)[0].tolist() == pytest.approx([1.5, 1, 1])
    assert importance_ratio(old, sampled, mask, "token_mask", 0.5, 1.5)[0].tolist() == pytest.approx([0.0, 1, 1])
    assert importance_ratio(old, sampled, mask, "sequence_mask", 0.5, 2.0)[0].tolist() == pytest.approx([e])
    assert importance_ratio(old, sampled, mask, "sequence_truncate", 0.5, 1.2)[0].tolist() == pytest.approx([1.2])
    with pytest.raises(ValueError):
        importance_ratio(old, sampled, mask, "token", None, None)


def test_split_budget_keeps_the_short_solution_whole():
    from twinloop.train.pairrl_math import split_budget

    assert split_budget(10, 20, 100) == (10, 20)
    assert split_budget(10, 200, 100) == (10, 90)
    assert split_budget(200, 10, 100) == (90, 10)
    assert split_budget(200, 300, 100) == (50, 50)
    assert split_budget(200, 300, 101) == (50, 51)
    assert split_budget(5, 5, -3) == (0, 0)
