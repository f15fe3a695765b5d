from twinloop.train.prm_distill import one_step_negatives, perturb_step, prefix_labels


def test_prefix_labels_stay_bad_after_the_first_bad_step():
    assert prefix_labels([1.0, 0.9, 0.2, 1.0]) == [1, 1, 0, 0]
    assert prefix_labels([1.0, 1.0]) == [1, 1]
    assert prefix_labels([0.4], threshold=0.5) == [0]


def test_perturb_step_changes_only_the_final_value():
    assert perturb_step("17 + 25 = 42", 1) == "17 + 25 = 43"
    assert perturb_step("47 + 38 = 77 + 8 = 85", -10) == "47 + 38 = 77 + 8 = 75"
    assert perturb_step("Answer: \\boxed{42}", 1) is None
    assert perturb_step("I add them", 1) is None


def test_one_step_negatives_differ_from_a_good_sample_in_one_step():
    good = {"steps": ["17 + 25 = 42", "42 * 3 = 126", "Answer: \\boxed{126}"], "labels": [1, 1, 1], "problem": 0}
    bad = {"steps": ["17 + 25 = 41"], "labels": [0], "problem": 1}
    (neg,) = one_step_negatives([good, bad], seed=3)
    changed = [k for k, (a, b) in enumerate(zip(good["steps"], neg["steps"])) if a != b]
    assert len(changed) == 1 and changed[0] in (0, 1)
    k = changed[0]
    assert neg["labels"] == [1] * k + [0] * (3 - k)
    assert good["labels"] == [1, 1, 1]  # the source example is untouched


def test_best_of_n_accuracy_picks_the_top_score_per_problem():
    from twinloop.train.prm_distill import best_of_n_accuracy

    ex = [{"problem": 0, "correct": False}, {"problem": 0, "correct": True},
          {"problem": 1, "correct": True}, {"problem": 1, "correct": False}]
    assert best_of_n_accuracy([0.2, 0.9, 0.5, 0.5], ex, 3) == 2 / 3  # tie: the earliest; problem 2 has no sample
    assert best_of_n_accuracy([0.9, 0.2, 0.1, 0.5], ex, 2) == 0.0
