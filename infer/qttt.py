"""Exact qTTT (arXiv 2512.13898): query-only test-time training over a frozen K/V cache.

For one long-context input:
1. ``prefill`` runs the context once and keeps every layer's K (after RoPE) and V as plain tensors: a
   ``FrozenCache``. Nothing below ever writes to it.
2. ``query_ttt`` runs N_TTT AdamW steps of next-token NLL on spans of k context tokens sampled uniformly. A span
   [s, s+k) re-runs every layer with the *current* W_Q; its queries attend to the cached K/V of positions
   <= their own, and the span's own K/V also come from the cache, so k_proj/v_proj never run on it. Only the
   q_proj weight matrices receive gradients.
3. ``generate`` / ``answer_nll`` run the question tail with fresh K/V from the adapted model, against the same
   frozen context cache.
4. ``restored_queries`` puts the original W_Q back afterwards, whatever happened.

HF's own attention path cannot do step 2 exactly: ``past_key_values.update()`` appends to the cache (mutating
it and recomputing the span's K/V), and its causal mask assumes new tokens follow the whole cache. So the forward
here is re-implemented on the model's own modules (Llama/Qwen2-style decoders: embed_tokens, layers with
input_layernorm / self_attn.{q,k,v,o}_proj / post_attention_layernorm / mlp, norm, lm_head, rotary_emb).
"""
from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class QTTTConfig:
    """qTTT settings. Defaults [check] are ALGORITHMS.md's: (k, N_TTT) = (128, 32), AdamW with weight decay 0.01,
    grad clip 1.0, lr in the paper's robust range [1e-6, 1e-5]; small models want 1e-4..1e-3 with 2..8 steps
    (STACK.md, "qTTT at small scale")."""

    steps: int = 32
    span: int = 128
    lr: float = 1e-5
    weight_decay: float = 0.01
    clip: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.span < 1 or self.lr <= 0 or self.clip <= 0:
            raise ValueError(f"bad qTTT settings {self}: steps >= 0, span >= 1, lr > 0, clip > 0")


def ttt_tokens(steps: int, span: int) -> int:
    """TTT compute in tokens processed: forward plus backward over each span, about 2·N_TTT·k."""
    return 2 * steps * span


def sample_span_starts(context_len: int, span: int, n: int, rng: random.Random) -> list[int]:
    """``n`` starts s, uniform over every span [s, s+span) whose next-token targets s+1..s+span are context."""
    if context_len < span + 1:
        raise ValueError(f"a span of {span} tokens needs a context of at least {span + 1} tokens, got {context_len}")
    return [rng.randint(0, context_len - span - 1) for _ in range(n)]


@dataclass
class FrozenCache:
    """Per layer, post-RoPE keys and values [1, kv_heads, length, head_dim] of the context; read-only by use."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @property
    def length(self) -> int:
        return self.keys[0].shape[2]

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))


class QueryForward:
    """The decoder forward on ``model``'s own modules, against a ``FrozenCache``."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.lm = model
        self.body = model.model
        cfg = model.config
        layer_types = getattr(cfg, "layer_types", None) or ()
        if getattr(cfg, "use_sliding_window", False) or "sliding_attention" in layer_types:
            raise ValueError("qTTT's exact forward does not implement sliding-window attention")
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.group = self.heads // self.kv_heads
        self.scale = self.head_dim ** -0.5
        self.layers = list(self.body.layers)

    # ------------------------------------------------------------------ pieces
    def query_projections(self) -> list[torch.nn.Module]:
        return [layer.self_attn.q_proj for layer in self.layers]

    def _rope(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self.body.rotary_emb(x, positions[None])
        return cos[:, None], sin[:, None]  # [1, 1, T, head_dim]

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin

    def _heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, n, self.head_dim).transpose(1, 2)

    def _attend(self, q: torch.Tensor, parts: Sequence[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]):
        """q [B, H, T, D]; parts of (K, V, mask): K/V [B or 1, KV, L, D], mask [T, L] bool (True = visible)."""
        b, _, t, d = q.shape
        qg = q.reshape(b, self.kv_heads, self.group * t, d)  # head h = kv*group + g, as repeat_kv orders them
        scores, values = [], []
        for k, v, mask in parts:
            s = torch.matmul(qg, k.transpose(-1, -2)) * self.scale
            if mask is not None:
                s = s.masked_fill(~mask.repeat(self.group, 1), float("-inf"))
            scores.append(s)
            values.append(v)
        probs = torch.softmax(torch.cat(scores, -1), -1)
        out = 0
        for p, v in zip(torch.split(probs, [s.shape[-1] for s in scores], -1), values):
            out = out + torch.matmul(p, v)
        return out.reshape(b, self.heads, t, d).transpose(1, 2).reshape(b, t, self.heads * d)

    def _block_end(self, layer, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        x = x + layer.self_attn.o_proj(attn)
        return x + layer.mlp(layer.post_attention_layernorm(x))

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm.lm_head(self.body.norm(x))

    # ------------------------------------------------------------------ the three passes
    @torch.no_grad()
    def prefill(self, ids: torch.Tensor) -> tuple[FrozenCache, torch.Tensor]:
        """ids [T] -> (the frozen cache of the context, logits of its last position [V])."""
        t = ids.shape[0]
        x = self.body.embed_tokens(ids[None])
        cos, sin = self._rope(x, torch.arange(t))
        keys, values = [], []
        for layer in self.layers:
            a = layer.self_attn
            h = layer.input_layernorm(x)
            q = self._rotate(self._heads(a.q_proj(h), self.heads), cos, sin)
            k = self._rotate(self._heads(a.k_proj(h), self.kv_heads), cos, sin)
            v = self._heads(a.v_proj(h), self.kv_heads)
            keys.append(k)
            values.append(v)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale, enable_gqa=True)
            x = self._block_end(layer, x, o.transpose(1, 2).reshape(1, t, -1))
        return FrozenCache(keys, values), self._logits(x[0, -1])

    def span_logits(self, ids: torch.Tensor, cache: FrozenCache, start: int, span: int) -> torch.Tensor:
        """Logits [span, V] at context positions start..start+span-1: queries with the current W_Q, keys and
        values from the frozen cache up to each query's own position. Differentiable in q_proj."""
        positions = torch.arange(start, start + span)
        x = self.body.embed_tokens(ids[start:start + span][None])
        cos, sin = self._rope(x, positions)
        end = start + span
        mask = torch.arange(end)[None, :] <= positions[:, None]  # [span, end]
        for li, layer in enumerate(self.layers):
            h = layer.input_layernorm(x)
            q = self._rotate(self._heads(layer.self_attn.q_proj(h), self.heads), cos, sin)
            o = self._attend(q, [(cache.keys[li][:, :, :end], cache.values[li][:, :, :end], mask)])
            x = self._block_end(layer, x, o)
        return self._logits(x)[0]

    def span_nll(self, ids: torch.Tensor, cache: FrozenCache, start: int, span: int) -> torch.Tensor:
        """Mean next-token NLL of ids[start+1 : start+span+1] (the TTT loss)."""
        return F.cross_entropy(self.span_logits(ids, cache, start, span), ids[start + 1:start + span + 1])

    @torch.no_grad()
    def extend(self, tokens: torch.Tensor, cache: FrozenCache, fresh: list, all_positions: bool = False):
        """Run new tokens [B, T] after the context and ``fresh`` (per layer (K, V) [B, KV, n, D] of earlier new
        tokens, or None; appended in place). They see the whole frozen cache plus fresh K/V causally."""
        b, t = tokens.shape
        done = 0 if fresh[0] is None else fresh[0][0].shape[2]
        positions = torch.arange(cache.length + done, cache.length + done + t)
        x = self.body.embed_tokens(tokens)
        cos, sin = self._rope(x, positions)
        mask = torch.arange(done + t)[None, :] <= (torch.arange(t) + done)[:, None]
        for li, layer in enumerate(self.layers):
            a = layer.self_attn
            h = layer.input_layernorm(x)
            q = self._rotate(self._heads(a.q_proj(h), self.heads), cos, sin)
            k = self._rotate(self._heads(a.k_proj(h), self.kv_heads), cos, sin)
            v = self._heads(a.v_proj(h), self.kv_heads)
            if fresh[li] is not None:
                k, v = torch.cat([fresh[li][0], k], 2), torch.cat([fresh[li][1], v], 2)
            fresh[li] = (k, v)
            o = self._attend(q, [(cache.keys[li], cache.values[li], None), (k, v, mask)])
            x = self._block_end(layer, x, o)
        return self._logits(x if all_positions else x[:, -1])

    # ------------------------------------------------------------------ answers
    @torch.no_grad()
    def answer_nll(self, cache: FrozenCache, tail: torch.Tensor, answer: torch.Tensor) -> float:
        """Teacher-forced mean NLL per token of the gold ``answer`` ids after the question ``tail`` ids."""
        seq = torch.cat([tail, answer])
        logits = self.extend(seq[None], cache, [None] * len(self.layers), all_positions=True)[0]
        n = answer.shape[0]
        return F.cross_entropy(logits[-n - 1:-1], answer).item()

    @torch.no_grad()
    def generate(self, cache: FrozenCache, tail: torch.Tensor, max_new_tokens: int, stop_ids: Sequence[int],
                 n: int = 1, temperature: float = 0.0, generator: torch.Generator | None = None
                 ) -> tuple[list[list[int]], int]:
        """Decode ``n`` continuations of tail (greedy at temperature 0). Returns (token ids without the stop
        token, tokens generated in all, stop tokens included)."""
        fresh = [None] * len(self.layers)
        logits = self.extend(tail[None], cache, fresh)
        if n > 1:
            logits = logits.expand(n, -1)
            fresh = [(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1)) for k, v in fresh]
        outs: list[list[int]] = [[] for _ in range(n)]
        done = [False] * n
        generated = 0
        for step in range(max_new_tokens):
            if temperature == 0:
                nxt = logits.argmax(-1)
            else:
                nxt = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=generator)[:, 0]
            for i, token in enumerate(nxt.tolist()):
                if not done[i]:
                    generated += 1
                    done[i] = token in stop_ids
                    if not done[i]:
                        outs[i].append(token)
            if all(done) or step == max_new_tokens - 1:
                break
            logits = self.extend(nxt[:, None], cache, fresh)
        return outs, generated


# ---------------------------------------------------------------------- the TTT loop
@contextlib.contextmanager
def restored_queries(fwd: QueryForward) -> Iterator[None]:
    """Snapshot every q_proj weight (and bias) and put it back on exit, exceptions included."""
    saved = [(q.weight.detach().clone(), None if q.bias is None else q.bias.detach().clone())
             for q in fwd.query_projections()]
    try:
        yield
    finally:
        with torch.no_grad():
            for q, (w, b) in zip(fwd.query_projections(), saved):
                q.weight.copy_(w)
                q.weight.requires_grad_(False)
                if b is not None:
                    q.bias.copy_(b)


def query_weights(fwd: QueryForward) -> list[torch.nn.Parameter]:
    """The W_Q matrices of every attention layer (biases stay fixed: the method adapts W_Q only)."""
    return [q.weight for q in fwd.query_projections()]


def query_ttt(fwd: QueryForward, ids: torch.Tensor, cache: FrozenCache, cfg: QTTTConfig,
              params: Sequence[torch.nn.Parameter] | None = None) -> list[float]:
    """N_TTT AdamW steps (clip ``cfg.clip``) on uniformly sampled spans of the context ``ids`` against the frozen
    cache, updating ``params`` (W_Q by default) in place. Every other parameter keeps requires_grad False, so
    nothing else can move. Returns the span losses. Callers restore the weights (``restored_queries``)."""
    params = list(query_weights(fwd) if params is None else params)
    frozen = [p for p in fwd.lm.parameters() if p.requires_grad and all(p is not q for q in params)]
    for p in frozen:
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    span = min(cfg.span, ids.shape[0] - 1)
    starts = sample_span_starts(ids.shape[0], span, cfg.steps, random.Random(cfg.seed))
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    losses = []
    try:
        for s in starts:
            loss = fwd.span_nll(ids, cache, s, span)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            opt.step()
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"qTTT span loss is {loss.item()} at start {s}")
            losses.append(loss.item())
    finally:
        for p in params:
            p.requires_grad_(False)
            p.grad = None
        for p in frozen:
            p.requires_grad_(True)
    return losses
