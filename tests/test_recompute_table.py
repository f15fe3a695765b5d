"""bench/recompute_table.py: step-level search is compared with its own reward's best-of-N at the same N and at
the cheapest best-of-N that spends at least as many total tokens."""
import importlib.util
from pathlib import Path

spec = importlib.util.spec_from_file_location("recompute_table",
                                              Path(__file__).resolve().parents[1] / "bench" / "recompute_table.py")
table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(table)


def rows(correct, tokens, rm=0):
    return [{"problem_id": i, "correct": c, "generated_tokens": tokens, "rm_tokens": rm} for i, c in enumerate(correct)]


def test_step_level_rows_meet_their_own_best_of_n_at_equal_n_and_equal_tokens():
    groups = {
        ("best_of_n [v]", 4): rows([1, 0, 0, 0], 100, 100),
        ("best_of_n [v]", 8): rows([1, 1, 0, 0], 200, 200),
        ("best_of_n [w]", 4): rows([0, 0, 0, 0], 100, 100),
        ("beam_search [v]", 4): rows([1, 1, 1, 0], 100, 250),  # 350 total: best_of_n@8 (400) is the first >=
        ("beam_search [v]", 8): rows([0, 0, 0, 0], 300, 500),  # 800 total: no best_of_n spends that much
        ("greedy", 1): rows([1, 0, 0, 0], 10),
    }
    lines = table.step_vs_best_of_n(groups)
    assert lines == [
        "- beam_search [v]@4 vs its best_of_n@4: +2 / -0 on 4 problems, sign test p = 0.5",
        "- beam_search [v]@4 vs its best_of_n@8 (400 >= 350 total tokens): +1 / -0 on 4 problems, sign test p = 1",
        "- beam_search [v]@8 vs its best_of_n@8: +0 / -2 on 4 problems, sign test p = 0.5",
    ]
