"""Exact qTTT on tiny random decoders: the frozen-cache forward agrees with HF's own forward, only W_Q moves,
the cache is never written, and the weights come back."""
import random

import pytest
import torch
from twinloop.infer.qttt import QTTTConfig, QueryForward, query_ttt, restored_queries, sample_span_starts, ttt_tokens

TOL = 1e-4  # float32 logits, two re-implementations of the same maths: stated tolerance, never bit for bit


def tiny(kind: str):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    common = dict(vocab_size=97, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                  initializer_range=0.2)
    if kind == "qwen2":  # q/k/v biases, tied embeddings
        model = Qwen2ForCausalLM(Qwen2Config(tie_word_embeddings=True, **common))
    else:
        model = LlamaForCausalLM(LlamaConfig(tie_word_embeddings=False, **common))
    return model.float().eval()


@pytest.fixture(params=["qwen2", "llama"], scope="module")
def model(request):
    return tiny(request.param)


def ids(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 97, (n,), generator=g)


@pytest.mark.parametrize("start,span", [(0, 16), (37, 24), (70, 9)])
def test_span_forward_matches_hf(model, start, span):
    x = ids(80)
    fwd = QueryForward(model)
    cache, last = fwd.prefill(x)
    with torch.no_grad():
        ref = model(x[None]).logits[0]
        mine = fwd.span_logits(x, cache, start, span)
    assert (mine - ref[start:start + span]).abs().max().item() < TOL
    assert (last - ref[-1]).abs().max().item() < TOL


def test_tail_against_cache_matches_hf(model):
    ctx, tail = ids(50), ids(7, seed=2)
    fwd = QueryForward(model)
    cache, _ = fwd.prefill(ctx)
    with torch.no_grad():
        ref = model(torch.cat([ctx, tail])[None]).logits[0, 50:]
        mine = fwd.extend(tail[None], cache, [None] * 2, all_positions=True)[0]
        # token by token through the fresh K/V path gives the same logits
        fresh = [None] * 2
        steps = torch.stack([fwd.extend(tail[i:i + 1][None], cache, fresh)[0] for i in range(7)])
    assert (mine - ref).abs().max().item() < TOL
    assert (steps - ref).abs().max().item() < TOL


def test_greedy_generate_matches_hf_generate(model):
    ctx, tail = ids(40), ids(3, seed=3)
    fwd = QueryForward(model)
    cache, _ = fwd.prefill(ctx)
    (mine,), n = fwd.generate(cache, tail, max_new_tokens=6, stop_ids=[])
    full = torch.cat([ctx, tail])[None]
    ref = model.generate(full, attention_mask=torch.ones_like(full), max_new_tokens=6, do_sample=False,
                         pad_token_id=0, eos_token_id=None)[0, 43:].tolist()
    assert mine == ref and n == 6


def test_only_wq_changes_cache_untouched_and_weights_restored(model):
    x = ids(120)
    fwd = QueryForward(model)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    cache, _ = fwd.prefill(x)
    cache_copy = [t.clone() for t in (*cache.keys, *cache.values)]
    nll0 = fwd.answer_nll(cache, x[:5], x[5:9])
    seen = {}
    with restored_queries(fwd):
        losses = query_ttt(fwd, x, cache, QTTTConfig(steps=4, span=32, lr=1e-2, seed=0))
        after = model.state_dict()
        seen["changed"] = {k for k in before if not torch.equal(before[k], after[k])}
        seen["nll"] = fwd.answer_nll(cache, x[:5], x[5:9])
    wq = {k for k in before if k.endswith("q_proj.weight")}
    assert len(losses) == 4
    assert seen["changed"] == wq  # every W_Q moved, nothing else did (bit-identical)
    assert abs(seen["nll"] - nll0) > 1e-4  # the adaptation reached the decode path
    for a, b in zip(cache_copy, (*cache.keys, *cache.values)):
        assert torch.equal(a, b)  # the frozen cache was never written
    restored = model.state_dict()
    assert all(torch.equal(before[k], restored[k]) for k in before)
    assert not any(p.requires_grad for p in fwd.query_projections() for p in [p.weight])
    assert fwd.answer_nll(cache, x[:5], x[5:9]) == pytest.approx(nll0, abs=1e-6)  # nothing leaks


def test_weights_restored_after_an_error(model):
    x = ids(60)
    fwd = QueryForward(model)
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    cache, _ = fwd.prefill(x)
    with pytest.raises(RuntimeError, match="boom"), restored_queries(fwd):
        query_ttt(fwd, x, cache, QTTTConfig(steps=2, span=16, lr=1e-1))
        raise RuntimeError("boom")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_span_sampler_stays_inside_the_context():
    rng = random.Random(0)
    starts = sample_span_starts(200, 128, 5000, rng)
    assert min(starts) == 0 and max(starts) == 200 - 128 - 1  # both ends reachable, targets end at 199
    assert sample_span_starts(9, 8, 50, rng) == [0] * 50
    with pytest.raises(ValueError, match="at least 9 tokens"):
        sample_span_starts(8, 8, 1, rng)


def test_ttt_tokens_matches_the_paper_match():
    assert ttt_tokens(32, 128) == 8192


def test_twinloop_ttt_command(tiny_model_dir, tmp_path, capsys):
    import json

    from twinloop.cli import main

    out = tmp_path / "ttt.jsonl"
    rc = main(["ttt", "--model", str(tiny_model_dir), "--task", "kv_retrieval", "--task-args",
               '{"context_words": 60, "n_keys": 3}', "--n", "2", "--steps", "0,2", "--span", "16", "--lr", "1e-2",
               "--max-new-tokens", "4", "--out", str(out)])
    assert rc == 0
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["steps"], len(r["ttt_losses"])) for r in lines] == [(0, 0), (0, 0), (2, 2), (2, 2)]
    assert all(r["score"] in (0.0, 1.0) and r["cache_bytes"] > 0 for r in lines)
    assert lines[0]["gold_nll"] != pytest.approx(lines[2]["gold_nll"], abs=1e-6)  # TTT reached the answer
    assert "N_TTT=2" in capsys.readouterr().out
    assert main(["ttt", "--model", str(tiny_model_dir), "--task-args", "[1]"]) == 2
    assert "JSON object" in capsys.readouterr().err


def test_twinloop_ttt_recipe_then_flags(tiny_model_dir, tmp_path, capsys):
    import json

    from twinloop.cli import main

    recipe = tmp_path / "ttt.yaml"
    out = tmp_path / "ttt.jsonl"
    recipe.write_text(f"model: {tiny_model_dir}\ntask: kv_retrieval\ntask_args: {{context_words: 40, n_keys: 2}}\n"
                      f"n: 3\nsteps: [0, 1]\nspan: 8\nlr: 1.0e-2\nmax_new_tokens: 2\nout: {out}\n")
    assert main(["ttt", "--recipe", str(recipe), "--n", "1"]) == 0  # the flag wins over the recipe's n: 3
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["steps"], len(r["ttt_losses"])) for r in lines] == [(0, 0), (1, 1)]
    assert "N_TTT=1" in capsys.readouterr().out
    recipe.write_text(f"model: {tiny_model_dir}\nsteps: [0]\nlearning_rate: 1.0\n")
    assert main(["ttt", "--recipe", str(recipe)]) == 2
    assert "unknown setting 'learning_rate'" in capsys.readouterr().err
    assert main(["ttt", "--task", "kv_retrieval"]) == 2
    assert "no model" in capsys.readouterr().err


def test_prompt_parts_cut_where_the_question_starts(tiny_model_dir):
    from transformers import AutoTokenizer
    from twinloop.infer.qttt_answer import prompt_parts

    from twinloop.tasks.kv_retrieval import load

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    (row,) = load("test", n=1, context_words=40, n_keys=3)
    parts = prompt_parts(tok, row)
    context, tail = tok.decode(parts.context), tok.decode(parts.tail)
    assert context.endswith(row["context"]) and context.startswith("<|im_start|>user\n")
    assert tail.startswith(row["question"]) and tail.endswith("<|im_start|>assistant\n" + row["answer_prefix"])
    assert tok.decode(parts.answer) == " " + row["answer"]
    with pytest.raises(ValueError, match="'question'"):
        prompt_parts(tok, {"prompt": row["prompt"]})


def test_shipped_ttt_recipes_hold_only_known_settings():
    import argparse
    from pathlib import Path

    from twinloop.ttt_cli import DEFAULTS, resolve

    recipes = sorted((Path(__file__).resolve().parents[1] / "recipes" / "ttt").glob("*.yaml"))
    assert recipes
    for path in recipes:
        args = resolve(argparse.Namespace(recipe=str(path), **{k: None for k in DEFAULTS}))
        assert args.model and [int(s) for s in args.steps.split(",")] and isinstance(args.lr, float)


def test_kv_tiny_recipe_runs_the_shipped_model(monkeypatch, tmp_path, capsys):
    import json
    from pathlib import Path

    from twinloop.cli import main

    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the recipe names checkpoints/ from the repo root
    out = tmp_path / "ttt.jsonl"
    assert main(["ttt", "--recipe", "recipes/ttt/kv-tiny.yaml", "--task-args", '{"context_words": 60, "n_keys": 6}',
                 "--n", "8", "--steps", "0,4", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines if line.startswith("N_TTT")] == ["N_TTT=0", "N_TTT=4"]
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 16 and sum(r["score"] for r in rows if r["steps"] == 0) == 8  # retrieves at 60 words
