"""The qTTT study's own logic (bench/qttt_study.py, bench/qttt_train_tiny.py) on the random tiny model: the
training format is the test format, the thinking baseline's budget and prompt, and the study end to end."""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import qttt_study  # noqa: E402
import qttt_train_tiny  # noqa: E402


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_training_first_turn_is_the_study_format(tok):
    """The first answer of a training sequence is tokenized exactly as the study cuts a test row (context, tail,
    gold), and the code mask covers exactly the asked keys' codes."""
    from twinloop.infer.qttt_answer import prompt_parts

    from twinloop.tasks.kv_retrieval import make_item

    ids, mask = qttt_train_tiny.encode_item(tok, random.Random(5), 50, 4, questions=3)
    item = make_item(random.Random(5), 50, 4)
    row = {**item, "prompt": [{"role": "user", "content": item["context"] + item["question"]}]}
    parts = prompt_parts(tok, row)
    first = parts.context + parts.tail + parts.answer
    assert ids[:len(first)] == first
    assert mask[:len(first)] == [0] * len(parts.context + parts.tail) + [1] * len(parts.answer)
    masked = [[t for t, m in zip(ids, mask) if m]]
    codes = tok.decode(masked[0]).split()
    assert len(codes) == 3 and codes[0] == item["answer"]
    assert all(f"is {c}." in item["context"] for c in codes)  # every answer is a code of this context


def assert_training_item_is_the_study_format(tok, seed: int, code_tokens: int) -> None:
    """The gold answer is ``code_tokens`` tokens, and a one-question training item is exactly the study's prompt
    (context + tail + answer) with only the code tokens in the loss mask."""
    from twinloop.infer.qttt_answer import prompt_parts

    from twinloop.tasks.kv_retrieval import make_item

    item = make_item(random.Random(seed), 40, 3)
    row = {**item, "prompt": [{"role": "user", "content": item["context"] + item["question"]}]}
    parts = prompt_parts(tok, row)
    assert len(parts.answer) == code_tokens and tok.decode(parts.answer) == " " + item["answer"]
    ids, mask = qttt_train_tiny.encode_item(tok, random.Random(seed), 40, 3, questions=1)
    assert ids[:-2] == parts.context + parts.tail + parts.answer and sum(mask) == code_tokens


def test_word_tokens_make_keys_and_codes_one_token_each(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)  # a fresh copy: the fixture's stays as built
    qttt_train_tiny.add_word_tokens(tok)
    ids = tok("The code for violin is 4821.", add_special_tokens=False)["input_ids"]
    assert [tok.decode([i]) for i in ids][-4:] == [" violin", " is", " 4821", "."]
    assert tok.decode(ids) == "The code for violin is 4821."
    assert_training_item_is_the_study_format(tok, seed=3, code_tokens=1)


def test_pair_codes_make_a_code_two_tokens_and_keep_the_format(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    before = len(tok)
    qttt_train_tiny.add_word_tokens(tok, pair_codes=True)
    assert len(tok) - before <= 50 + 90 + 100  # keys + " 10".." 99" + "00".."99", not 9,000 whole codes
    ids = tok("The code for violin is 4807.", add_special_tokens=False)["input_ids"]
    assert [tok.decode([i]) for i in ids][-5:] == [" violin", " is", " 48", "07", "."]
    assert_training_item_is_the_study_format(tok, seed=4, code_tokens=2)


def test_curriculum_grows_from_low_to_high():
    grow = [qttt_train_tiny.curriculum(step, 100, 1, 6) for step in (0, 25, 50, 99, 100, 5000)]
    assert grow == [1, 2, 3, 5, 6, 6]
    assert qttt_train_tiny.curriculum(0, 0, 1, 6) == 6  # no ramp: the full range from the start


def test_thinking_gets_the_budget_then_the_answer_prefix(tiny_model_dir, tok):
    import torch
    from transformers import AutoModelForCausalLM
    from twinloop.infer.qttt import QueryForward
    from twinloop.infer.qttt_answer import prompt_parts

    from twinloop.tasks.kv_retrieval import load

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    fwd = QueryForward(model)
    calls = []
    real = fwd.generate

    def spy(cache, tail, max_new, stop, **kw):
        calls.append((tok.decode(tail.tolist()), max_new))
        return real(cache, tail, max_new, [-1], **kw)  # no stop token: the thinking uses its whole budget

    fwd.generate = spy
    (row,) = load("test", n=1, context_words=40, n_keys=3)
    parts = prompt_parts(tok, row)
    cache, _ = fwd.prefill(torch.tensor(parts.context))
    text, used = qttt_study.thinking_answer(fwd, tok, cache, parts, row, budget=7, max_new=3)
    assert used == 7 and isinstance(text, str)
    (think_tail, budget), (answer_tail, n_answer) = calls
    assert budget == 7 and n_answer == 3
    assert think_tail.endswith("<|im_start|>assistant\n") and row["answer_prefix"] not in think_tail
    assert answer_tail.startswith(think_tail) and answer_tail.endswith("\n" + row["answer_prefix"])


def test_study_end_to_end_without_vllm(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "study.jsonl"
    assert qttt_study.main(["--model", str(tiny_model_dir), "--lengths", "40,80", "--keys", "3", "--n", "2",
                            "--steps", "2", "--span", "16", "--lr", "1e-2", "--no-lora", "--thinking",
                            "--out", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["length"] for r in rows] == [40, 80, 40, 80]  # interleaved across lengths
    for r in rows:
        assert r["maj2_samples"] == 2 * 2 * 16 // 6 and r["think2_tokens"] <= 2 * 2 * 16
        assert {r["plain_em"], r["qttt2_em"], r["maj2_em"], r["think2_em"]} <= {0, 1}
        assert r["qttt2_nll"] != pytest.approx(r["plain_nll"], abs=1e-6)  # TTT moved the answer
    capsys.readouterr()
    plot = tmp_path / "study.png"
    assert qttt_study.main(["--summarize", str(out), "--plot", str(plot)]) == 0
    table = capsys.readouterr().out
    assert "qttt2" in table and "think2" in table and plot.stat().st_size > 1000


def test_summary_labels_ttt_runs_by_lr_and_pairs_against_plain(tmp_path, capsys):
    def row(i, lr, qttt_em, with_maj):
        r = {"id": f"kv-{i}", "length": 60, "tokens": 200, "plain_em": 0, "plain_nll": 2.0, "plain_s": 0.1,
             "qttt2_em": qttt_em, "qttt2_nll": 1.5, "qttt2_s": 0.2, "lr": lr, "lora_lr": lr}
        if with_maj:
            r.update(maj2_em=1, maj2_s=0.3, maj2_tokens=126)
        return json.dumps(r)

    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("\n".join(row(i, 1e-3, 1, True) for i in range(4)) + "\n")
    b.write_text("\n".join(row(i, 1e-2, i % 2, False) for i in range(4)) + "\n")
    items = qttt_study.method_records([str(a), str(b)])
    assert set(items[(60, "kv-0", 200)]) == {"plain", "qttt2 lr=0.001", "qttt2 lr=0.01", "maj2"}
    assert qttt_study.main(["--summarize", f"{a},{b}"]) == 0
    out = capsys.readouterr().out
    assert "qttt2 lr=0.001     n=4    EM 1.000±0.000 [+1.000±0.000]  gold NLL 1.500±0.000 [-0.500±0.000]" in out
    assert "qttt2 lr=0.01      n=4    EM 0.500±0.289 [+0.500±0.289]" in out  # s.e. of (1, 0, 1, 0)
    assert '"maj2": 126.0' in out


def test_repeat_example_masks_the_second_copy_after_its_first_token():
    ids, mask = qttt_train_tiny.repeat_example(random.Random(0), [7, 8, 9, 10, 11], 6)
    assert len(ids) == len(mask) == 12 and ids[:6] == ids[6:]
    assert mask == [0] * 7 + [1] * 5  # the copy's first token has nothing before it to say what it is
    assert set(ids) <= {7, 8, 9, 10, 11}


def test_task_words_join_the_arith_policy_and_codes_keep_its_tokens():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(__file__).resolve().parents[1] / "checkpoints" / "tiny-arith-policy"
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)
    before = model.get_input_embeddings().weight.detach().clone()
    code_ids = tok(" 4821", add_special_tokens=False)["input_ids"]
    added = qttt_train_tiny.add_task_words(tok, model)
    after = model.get_input_embeddings().weight.detach()
    assert added > 50 and after.shape[0] == len(tok) == before.shape[0] + added
    assert torch.equal(after[:before.shape[0]], before)  # the trained rows are untouched
    new = after[before.shape[0]:]
    assert torch.cdist(new, new).add(torch.eye(added) * 1e9).min() > 0.1  # new words start apart
    assert len(tok(" violin", add_special_tokens=False)["input_ids"]) == 1
    assert tok(" 4821", add_special_tokens=False)["input_ids"] == code_ids


def test_tiny_trainer_runs_induction_steps_then_retrieval(tmp_path):
    out = tmp_path / "kv"
    assert qttt_train_tiny.main(["--out", str(out), "--steps", "4", "--induction-steps", "2", "--batch-size", "2",
                                 "--eval-every", "2", "--eval-n", "2", "--layers", "1", "--max-words", "20",
                                 "--max-keys", "2", "--pair-codes"]) == 0
    stats = json.loads((out / "train_stats.json").read_text())
    assert stats["args"]["induction_steps"] == 2 and [s for s, _ in stats["dev_em"]] == [2, 4]
    assert (out / "model.safetensors").exists() and (out / "tokenizer.json").exists()


def test_study_no_qttt_adds_other_methods_only(tiny_model_dir, tmp_path):
    out = tmp_path / "study.jsonl"
    assert qttt_study.main(["--model", str(tiny_model_dir), "--lengths", "40", "--keys", "3", "--n", "2",
                            "--steps", "2", "--span", "16", "--no-lora", "--no-qttt", "--out", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 2 and all("maj2_em" in r and "plain_em" in r and "qttt2_em" not in r for r in rows)
    with pytest.raises(SystemExit, match="majority-engine vllm"):
        qttt_study.main(["--model", str(tiny_model_dir), "--no-lora", "--majority-engine", "vllm",
                         "--out", str(tmp_path / "x.jsonl")])


def test_shipped_kv_model_retrieves_short_contexts_and_dilutes_long_ones():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(__file__).resolve().parents[1] / "checkpoints" / "tiny-kv-retrieval"
    tok, model = AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path).eval()
    rng = random.Random("shipped-kv")
    short = [qttt_train_tiny.encode_item(tok, rng, 60, 6, 1) for _ in range(24)]
    long = [qttt_train_tiny.encode_item(tok, rng, 960, 6, 1) for _ in range(16)]
    em_short = qttt_train_tiny.first_code_em(model, short, tok.pad_token_id)
    em_long = qttt_train_tiny.first_code_em(model, long, tok.pad_token_id)
    assert em_short >= 0.8 and em_long <= em_short - 0.4, (em_short, em_long)


def test_code_token_report_tells_an_oracle_from_a_constant(tok):
    import torch

    class Fixed:
        def __init__(self, oracle: bool):
            self.oracle = oracle

        def __call__(self, input_ids, attention_mask):
            nxt = torch.roll(input_ids, -1, dims=1) if self.oracle else torch.full_like(input_ids, 5)
            return type("Out", (), {"logits": torch.nn.functional.one_hot(nxt, len(tok)).float()})()

    rng = random.Random(1)
    rows = [qttt_train_tiny.encode_item(tok, rng, 40, 3, 1) for _ in range(4)]
    assert qttt_train_tiny.code_token_report(Fixed(True), rows, tok.pad_token_id) == \
        {"first": 1.0, "second": 1.0, "first_in_context": 1.0}  # every code is written in its context
    const = qttt_train_tiny.code_token_report(Fixed(False), rows, tok.pad_token_id)
    assert const["first"] == const["second"] == 0.0
