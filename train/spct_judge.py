"""The SPCT judge as a separate tiny model: a copy of the policy whose tokenizer reads the GRM template's fixed
text and the template judgment's phrases as single tokens, plus one-step hard negatives for its training data.

Why a separate model and not a LoRA on the policy (``SPCTConfig.judge``): the policy's 512-entry byte-level BPE
spells English letter by letter, so ``GRM_TEMPLATE`` alone takes ~550 of its 1024 positions and one best-of-8
GRM prompt is ~1230 tokens, over the context before the judge writes a word. With the template's chunks and the
judgment's phrases as added tokens the same best-of-8 prompt is a few hundred tokens, and a judgment a copy of a
few phrase tokens plus the numbers it checks. New embedding rows start at the mean of the rows of the BPE pieces
they replace (tied embeddings: the output row too), so the copy begins where the policy's reading of the text was.
The copy keeps the policy's weights (its arithmetic) and is fully fine-tuned; it is served by its own engine.
"""
from __future__ import annotations

import random
import string
from pathlib import Path

from twinloop.rewards.generative import _SCALE_1_10, _SCALE_BINARY, GRM_TEMPLATE, HINT
from twinloop.train.spct_data import CRITERIA

# phrases of template_judgment / first_error (the judge writes these), each one token
JUDGMENT_PHRASES = (
    CRITERIA, "\nAnalysis:", " Response", ": correct.", " step", " is wrong,", " not ", " uses ",
    ", not in the expression.", " comes after the answer.", " is not an equation.", " answers too early.",
    " answer", " is wrong.", " no answer.", " no steps.", "\nScores: \\boxed{", ", ",
)


def template_chunks() -> list[str]:
    """The literal text of the GRM prompt around its fields: template pieces, scale lines, response brackets."""
    chunks = [lit for lit, _, _, _ in string.Formatter().parse(GRM_TEMPLATE) if lit]
    chunks += [_SCALE_1_10, _SCALE_BINARY, HINT.split("{")[0], "[The Begin of Response ", "[The End of Response ",
               "]\n", "]\n\n"]
    return chunks


def judge_phrases() -> list[str]:
    """Every added token, longest first (duplicates removed)."""
    return sorted(set(template_chunks()) | set(JUDGMENT_PHRASES), key=lambda s: (-len(s), s))


def build_judge_model(policy_dir: str, out: str | Path) -> Path:
    """Copy the policy into ``out`` with the phrase tokens added; each new embedding row is the mean of the
    policy's rows for the BPE pieces of its phrase."""
    import torch
    from tokenizers import AddedToken
    from transformers import AutoModelForCausalLM
    from twinloop.train.common import load_tokenizer

    tok = load_tokenizer(policy_dir)
    model = AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32)
    phrases = judge_phrases()
    pieces = [tok(p, add_special_tokens=False).input_ids for p in phrases]
    added = tok.add_tokens([AddedToken(p, normalized=False) for p in phrases])
    if added != len(phrases):
        raise ValueError(f"{len(phrases) - added} judge phrases already were tokens of {policy_dir}")
    old = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        for p, ids in zip(phrases, pieces):
            emb[tok.convert_tokens_to_ids(p)] = emb[ids].mean(0)
    if not model.config.tie_word_embeddings:  # the tiny policy ties them; an untied head gets the same rows
        head = model.get_output_embeddings().weight
        with torch.no_grad():
            head[old:] = emb[old:]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    return out


def one_step_negative(text: str, rng: random.Random) -> str | None:
    """A hard negative (STACK.md): ``text`` with the result of one equation step changed by a small amount and the
    rest left as it was, so only reading that step tells it from the original; None without an equation step.
    The text form of ``rm_data.one_step_negative`` (steps split on the process rewards' delimiter)."""
    from twinloop.rewards.process import STEP_DELIMITER
    from twinloop.train.rm_data import one_step_negative as negative_steps

    made = negative_steps(text.split(STEP_DELIMITER), rng)
    return None if made is None else STEP_DELIMITER.join(made[0])
