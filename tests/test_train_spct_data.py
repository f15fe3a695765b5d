"""SPCT data (pure): ground truth, template judgments (round trip through the GRM parser and Eq. 10), items,
the query-disjoint split, the RFT filter, the phase-2 filter and meta-RM labels."""
import random

import pytest
from twinloop.rewards.generative import Judgment, judgment_correct, parse_scores
from twinloop.train.spct_data import (
    Item,
    drop_always_right,
    first_error,
    items_for_query,
    majority_pick_accuracy,
    meta_rows,
    rft_rates,
    rft_select,
    rl_rows,
    sft_rows,
    split_by_query,
    split_report,
    template_judgment,
    template_scores,
    truth_reward,
)

from twinloop.tasks import arith

EXPR = "(17 + 25) * 3 - 40"  # 42 * 3 = 126, 126 - 40 = 86
GOOD = "17 + 25 = 42\n\n42 * 3 = 126\n\n126 - 40 = 86\n\nAnswer: \\boxed{86}"
BAD_ARITH = "17 + 25 = 42\n\n42 * 3 = 124\n\n124 - 40 = 84\n\nAnswer: \\boxed{84}"
BAD_OPERAND = "17 + 25 = 42\n\n42 * 4 = 168\n\n168 - 40 = 128\n\nAnswer: \\boxed{128}"
NO_ANSWER = "17 + 25 = 42\n\n42 * 3 = 126"
QUERY = arith.prompt_text(EXPR)


def test_truth_reward_is_the_step_share_and_one_only_when_all_correct():
    assert truth_reward(EXPR, GOOD) == 1.0
    assert truth_reward(EXPR, BAD_ARITH) == pytest.approx(2 / 4)  # step 2 wrong, step 3 replays true, answer wrong
    assert truth_reward(EXPR, NO_ANSWER) == 0.0
    assert truth_reward(EXPR, GOOD + "\n\nAnswer: \\boxed{86}") == pytest.approx(4 / 5)


def test_first_error_names_the_first_wrong_step():
    assert first_error(EXPR, GOOD) is None
    assert first_error(EXPR, BAD_ARITH) == "step 2 is wrong, 42 * 3 = 126 not 124"
    assert first_error(EXPR, BAD_OPERAND) == "step 2 uses 42 * 4, not in the expression"
    assert first_error(EXPR, NO_ANSWER) == "no answer"
    assert first_error(EXPR, GOOD + "\n\nAnswer: \\boxed{86}") == "step 5 comes after the answer"
    assert first_error(EXPR, "hello") == "step 1 is not an equation"
    assert first_error(EXPR, "17 + 25 = 42\n\nAnswer: \\boxed{42}") == "answer 42 is wrong"
    assert first_error(EXPR, "17 + 25 = 42\n\nAnswer: \\boxed{42}\n\n42 * 3 = 126") == "step 2 answers too early"


def test_template_scores_satisfy_eq10_with_numbers():
    assert template_scores([1.0, 0.75]) == [10, 6]
    assert template_scores([0.5, 0.25, 1.0]) == [4, 2, 10]
    assert template_scores([0.5, 0.55]) == [4, 5]  # both 1 + int(7r) = 4: the best is raised above
    assert template_scores([0.0, 0.1]) == [1, 2]
    assert template_scores([1.0]) == [1] and template_scores([0.0]) == [0]


def test_every_template_judgment_parses_and_satisfies_eq10():
    rng = random.Random(0)
    texts = [GOOD, BAD_ARITH, BAD_OPERAND, NO_ANSWER, "junk"]
    checked = 0
    for _ in range(200):
        n = rng.randint(1, 4)
        responses = rng.sample(texts, n)
        rewards = [truth_reward(EXPR, t) for t in responses]
        if n == 1:
            rewards = [float(rewards[0] >= 1.0)]
        elif sum(r == max(rewards) for r in rewards) != 1:
            continue
        text = template_judgment(EXPR, responses, rewards)
        lines = text.split("\n")
        assert [line.split(":")[0] for line in lines] == ["Specific Criteria", "Analysis", "Scores"]
        scores = parse_scores(text, n, (0, 1) if n == 1 else (1, 10))
        assert scores is not None and judgment_correct(scores, rewards)
        j = Judgment(scores, text)
        assert "weight" in j.principles and j.critique.startswith("Response 1:")
        checked += 1
    assert checked > 100


def test_items_for_query_have_exactly_one_best_and_a_single_item():
    rng = random.Random(1)
    items = items_for_query(QUERY, EXPR, [GOOD, BAD_ARITH, BAD_OPERAND, NO_ANSWER, GOOD], rng, max_responses=4)
    multi, single = items
    assert 2 <= len(multi.responses) <= 4 and len(set(multi.responses)) == len(multi.responses)
    assert sum(r == max(multi.rewards) for r in multi.rewards) == 1 and multi.responses[multi.best] == GOOD
    assert len(single.responses) == 1 and single.rewards[0] in (0.0, 1.0)
    # two different correct samples: the best is one of them, the other is never beside it
    other_good = "25 + 17 = 42\n\n42 * 3 = 126\n\n126 - 40 = 86\n\nAnswer: \\boxed{86}"
    for seed in range(10):
        m = items_for_query(QUERY, EXPR, [GOOD, other_good, BAD_ARITH], random.Random(seed))[0]
        assert m.rewards.count(1.0) == 1 and len(m.responses) == 2
    # all samples equal: no multi item, only the single one
    assert [len(i.responses) for i in items_for_query(QUERY, EXPR, [GOOD, GOOD], rng)] == [1]
    # fits: a judge context that holds at most 2 responses shrinks the multi item to 2
    fit2 = items_for_query(QUERY, EXPR, [GOOD, BAD_ARITH, BAD_OPERAND, NO_ANSWER], random.Random(3),
                           fits=lambda it: len(it.responses) <= 2)
    assert [len(i.responses) for i in fit2] == [2, 1]


def _items(n_queries):
    return [Item(f"q{q}", EXPR, [GOOD, BAD_ARITH][: 1 + q % 2], [1.0, 0.75][: 1 + q % 2] if q % 2 else [0.0])
            for q in range(n_queries) for _ in range(2)]


def test_split_is_disjoint_by_query_and_reports_sizes():
    train, test = split_by_query(_items(10), test_share=0.3, seed=0)
    assert len({i.query for i in test}) == 3 and len({i.query for i in train}) == 7
    assert not {i.query for i in train} & {i.query for i in test}
    assert all(i.split == "train" for i in train) and all(i.split == "test" for i in test)
    report = split_report(train, test)
    assert report["queries_shared"] == 0
    assert report["train"]["items"] + report["test"]["items"] == 20
    assert report["train"]["multi"] + report["train"]["single"] == report["train"]["items"]
    half = split_report(_items(4), [])["train"]
    assert half["share_any_correct"] == 0.5 and half["share_single_label_1"] == 0.0
    with pytest.raises(ValueError, match="test_share"):
        split_by_query(_items(2), 1.0)


def test_rows_hold_the_shuffled_prompt_with_matching_judgment_and_rewards():
    item = Item(QUERY, EXPR, [BAD_ARITH, GOOD, BAD_OPERAND], [0.75, 1.0, truth_reward(EXPR, BAD_OPERAND)])
    for row in sft_rows([item] * 5, seed=2):
        prompt, judgment = row["prompt"][0]["content"], row["completion"][0]["content"]
        shown = [prompt.index(t) for t in item.responses]  # where each response sits in the prompt
        order = sorted(range(3), key=lambda i: shown[i])
        scores = parse_scores(judgment, 3)
        assert scores[order.index(1)] == 10 and max(scores) == 10
    for row in rl_rows([item] * 5, seed=2):
        prompt = row["prompt"][0]["content"]
        order = sorted(range(3), key=lambda i: prompt.index(item.responses[i]))
        assert row["rewards"] == [item.rewards[i] for i in order]


def test_rft_filter_drops_wrong_outputs_and_too_easy_items():
    assert rft_select([True, False, True], None) == rft_select([True, False, True], False)
    c = rft_select([True, False, True], True)
    assert c.keep == [0, 2] and c.keep_hinted and not c.too_easy
    easy = rft_select([True, True, True], True)
    assert easy.too_easy and easy.keep == [] and not easy.keep_hinted  # hinted output of an easy item is not kept
    hard = rft_select([False, False, False], True)
    assert hard.keep == [] and hard.keep_hinted
    rates = rft_rates([c, easy, hard, rft_select([False, False, False], False)], n_rft=3, hinted_tried=3)
    assert rates["too_easy"] == 1 and rates["nonhinted_kept"] == 2
    assert rates["nonhinted_acceptance"] == pytest.approx(2 / 9)
    assert rates["hinted_acceptance"] == pytest.approx(2 / 3) and rates["items_with_data"] == 2


def test_phase2_drops_items_always_right():
    assert drop_always_right(["a", "b", "c"], [[True] * 4, [True, False, True, True], [False] * 4]) == ["b", "c"]
    with pytest.raises(ValueError):
        drop_always_right(["a"], [])


def test_meta_labels_are_eq10_of_the_unpermuted_scores():
    item = Item(QUERY, EXPR, [BAD_ARITH, GOOD], [0.75, 1.0])
    judgments = [Judgment([2, 9], "a", [1, 0]), Judgment([9, 2], "b", [0, 1]), Judgment([5, 5], "c", [0, 1]),
                 Judgment(None, "d", [1, 0])]
    rows = meta_rows(item, judgments)
    assert [r["label"] for r in rows] == [1.0, 0.0, 0.0, 0.0]
    # the prompt shows the responses in the judgment's order
    assert rows[0]["prompt"].index(GOOD) < rows[0]["prompt"].index(BAD_ARITH)
    assert rows[1]["prompt"].index(BAD_ARITH) < rows[1]["prompt"].index(GOOD)


def test_majority_pick_accuracy():
    same = "17 + 25 = 42\n\n42 * 3 = 124\n\n124 - 40 = 86\n\nAnswer: \\boxed{86}"  # right answer, wrong step
    assert majority_pick_accuracy(Item(QUERY, EXPR, [GOOD, BAD_ARITH, same], [1.0, 0.75, 0.5])) == 0.5
    assert majority_pick_accuracy(Item(QUERY, EXPR, [GOOD, BAD_ARITH], [1.0, 0.75])) == 0.5
    assert majority_pick_accuracy(Item(QUERY, EXPR, [BAD_ARITH, BAD_ARITH + " ", GOOD], [0.7, 0.6, 1.0])) == 0.0


def test_selection_accuracy_votes_the_first_k_and_meta_keeps_the_best_rated():
    from twinloop.train.spct_eval import selection_accuracy

    item = Item(QUERY, EXPR, [BAD_ARITH, GOOD], [0.5, 1.0])  # best = 1
    js = [Judgment([9, 2], "a", [0, 1]), Judgment([1, 9], "b", [0, 1]), Judgment([2, 9], "c", [1, 0]),
          Judgment(None, "d", [0, 1])]
    # @1: (9, 2) picks 0 -> wrong; @3: (12, 20) picks 1 -> right; all invalid -> wrong
    assert selection_accuracy([item], [js], 1) == [0.0]
    assert selection_accuracy([item], [js], 3) == [1.0]
    assert selection_accuracy([item], [[js[3]]], 1) == [0.0]
    # meta-guided @4, k_meta 1: the meta RM rates judgment a highest -> wrong; rating b highest -> right
    assert selection_accuracy([item], [js], 4, meta=[[0.9, 0.1, 0.2, 5.0]], k_meta=1) == [0.0]
    assert selection_accuracy([item], [js], 4, meta=[[0.1, 0.9, 0.2, 5.0]], k_meta=1) == [1.0]
