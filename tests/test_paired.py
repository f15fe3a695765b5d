import pytest
from twinloop.infer.paired import discordant, paired, sign_test


def test_discordant_counts():
    assert discordant([True, True, False, False], [True, False, True, False]) == (1, 1)
    assert discordant([True, True, True], [False, False, True]) == (2, 0)
    with pytest.raises(ValueError, match="length"):
        discordant([True], [True, False])


def test_sign_test_on_worked_numbers():
    assert sign_test(0, 0) == 1.0
    assert sign_test(5, 5) == 1.0
    assert sign_test(22, 0) == pytest.approx(2 * 0.5**22)
    assert sign_test(0, 22) == pytest.approx(2 * 0.5**22)
    assert sign_test(6, 1) == pytest.approx(2 * (1 + 7) / 128)  # 0.125
    assert sign_test(29, 15) == pytest.approx(0.0488, abs=1e-4)  # STACK.md's probe: p ~ 0.05
    with pytest.raises(ValueError):
        sign_test(-1, 2)


def test_paired_matches_problems_by_id():
    a = [{"problem_id": "p1", "correct": True}, {"problem_id": "p2", "correct": True},
         {"problem_id": "p3", "correct": False}]
    b = [{"problem_id": "p2", "correct": False}, {"problem_id": "p1", "correct": True}]
    assert paired(a, b) == {"problems": 2, "wins": 1, "losses": 0, "p": 1.0}


def test_within_problem_pair_accuracy():
    from twinloop.infer.paired import pair_accuracy

    groups = [([0.9, 0.2, 0.5], [True, False, False]),  # 2 pairs, both right
              ([0.3, 0.3], [True, False]),  # a tie: ½
              ([0.1, 0.8], [True, False]),  # wrong order
              ([1.0, 0.0], [True, True])]  # no wrong sample: no pair
    got = pair_accuracy(groups)
    assert got["pairs"] == 4
    assert got["pair_accuracy"] == pytest.approx((2 + 0.5 + 0) / 4)
    assert got["ties"] == pytest.approx(0.25)
