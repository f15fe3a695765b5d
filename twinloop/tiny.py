"""Tiny Qwen2-style models and byte-level BPE tokenizers, built offline.

Used by the engine smoke run, the test fixtures, and ``twinloop tinyworld build`` (which trains one).
vLLM's CPU attention needs head_dim >= 32, so every config here keeps head_dim = 32.
"""
from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 512, model_max_length: int = 1024):
    """A byte-level BPE tokenizer with ChatML special tokens and a chat template (EOS = <|im_end|>)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>", "<|endoftext|>"],
        model_max_length=model_max_length,
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.padding_side = "left"
    return hf_tok


def tiny_config(tokenizer, hidden: int = 128, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                intermediate: int = 256, max_positions: int = 1024, tied: bool = True, **extra):
    """A Qwen2 config with head_dim 32 sized for CPU."""
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=hidden // heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=tied,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def smoke_corpus(n: int = 4000, seed: int = 0) -> Iterable[str]:
    rng = random.Random(seed)
    for _ in range(n):
        a, b, op = rng.randint(0, 999), rng.randint(0, 999), rng.choice("+-*")
        r = a + b if op == "+" else a - b if op == "-" else a * b
        yield f"What is {a} {op} {b}? The answer is {r}."


def build_random_tiny(out_dir: str | Path, seed: int = 0, tied: bool = True, init_range: float = 0.2) -> Path:
    """Save a random-weight tiny Qwen2 causal LM plus tokenizer to ``out_dir`` (a few seconds on CPU).

    ``init_range`` is larger than usual so that a random model gives non-degenerate, varied samples.
    """
    import torch
    from transformers import Qwen2ForCausalLM

    out = Path(out_dir)
    tok = train_tokenizer(smoke_corpus(seed=seed))
    cfg = tiny_config(tok, tied=tied, initializer_range=init_range)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(cfg).float()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def build_random_head(base_dir: str | Path, out_dir: str | Path, head: str = "Qwen2ForSequenceClassification",
                      num_labels: int = 1, seed: int = 0) -> Path:
    """A random classifier head (scalar RM, token-level PRM) on a tiny model's config and tokenizer."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoTokenizer

    out = Path(out_dir)
    tok = AutoTokenizer.from_pretrained(base_dir)
    cfg = AutoConfig.from_pretrained(base_dir)
    cfg.num_labels, cfg.architectures, cfg.pad_token_id = num_labels, [head], tok.pad_token_id
    torch.manual_seed(seed)
    getattr(transformers, head)(cfg).float().save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out
