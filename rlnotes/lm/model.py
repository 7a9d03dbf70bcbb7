"""A tiny GPT, minGPT-style: one file, built bottom-up, attention written out.

Introduced in ``06_dpo`` and reused by ``07_grpo`` and ``08_rlhf``. With the defaults (2 layers, 4
heads, 64 channels) it has about 100k parameters and learns 2-digit addition on a CPU in a minute.

Shapes: B batch, T tokens, C = n_embd channels, nh heads, hs = C // nh channels a head, V vocabulary.
The structure follows Karpathy's minGPT / nanoGPT (pre-LayerNorm blocks, learned positions, GELU MLP,
the output projections initialised smaller by 1/sqrt(2 * n_layer)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["GPTConfig", "CausalSelfAttention", "MLP", "Block", "GPT", "disable_dropout"]


@dataclass
class GPTConfig:
    vocab_size: int  # tokens the model reads and predicts (the tokenizer's vocab_size)
    block_size: int  # the longest sequence a forward pass accepts (prompt + answer + EOS)
    n_layer: int = 2  # transformer blocks
    n_head: int = 4  # attention heads in each block
    n_embd: int = 64  # channels of the residual stream
    dropout: float = 0.0  # dropout on attention weights and residual branches (0: none)

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"GPTConfig: {name} must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"GPTConfig: n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig: dropout must be in [0, 1), got {self.dropout}")


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where token t sees tokens 0..t only."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd)  # query, key, value in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        # lower-triangular mask: 1 where attention is allowed (a buffer, not a parameter)
        mask = torch.tril(torch.ones(config.block_size, config.block_size, dtype=torch.bool))
        self.register_buffer("mask", mask.view(1, 1, config.block_size, config.block_size), persistent=False)

    def forward(self, x, cache=None, layer=0):
        """x: (B, T, C) -> (B, T, C). With a `cache` (a list, see GPT.forward), the keys and values of
        earlier tokens are read from cache[layer] and this call's are appended to it."""
        B, T, C = x.shape
        hs = C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:  # incremental decoding: prepend the earlier tokens' keys and values
            if layer < len(cache):
                k = torch.cat([cache[layer][0], k], dim=2)  # (B, nh, past + T, hs)
                v = torch.cat([cache[layer][1], v], dim=2)
                cache[layer] = (k, v)
            else:
                cache.append((k, v))
        S = k.shape[2]  # keys visible: the earlier tokens plus these T
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)  # (B, nh, T, hs) @ (B, nh, hs, S) -> (B, nh, T, S)
        att = att.masked_fill(~self.mask[:, :, S - T : S, :S], float("-inf"))  # no peeking at later tokens
        att = F.softmax(att, dim=-1)  # each row: weights over the tokens it may see
        att = self.attn_dropout(att)
        y = att @ v  # (B, nh, T, S) @ (B, nh, S, hs) -> (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again: (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward: C -> 4C -> C with a GELU."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))  # (B, T, C) -> (B, T, 4C) -> (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x, cache=None, layer=0):
        x = x + self.attn(self.ln_1(x), cache, layer)  # tokens talk to each other
        x = x + self.mlp(self.ln_2(x))  # each token thinks on its own
        return x


class GPT(nn.Module):
    """Token + position embeddings, n_layer blocks, a final LayerNorm and a linear head to V logits."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)  # token embeddings
        self.wpe = nn.Embedding(config.block_size, config.n_embd)  # learned position embeddings
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # GPT-2 initialisation: N(0, 0.02), residual projections scaled down by the depth.
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        """Number of trainable parameters (the notebooks print it)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def forward(self, idx, cache=None):
        """idx: (B, T) token ids -> logits (B, T, V); logits[:, t] predict the token after idx[:, t].

        cache: None for an ordinary forward pass. For generation, pass a list, empty at the first call
        (the whole prompt): every block stores its keys and values (B, nh, T, hs) in it, and the next
        calls pass only the new tokens, whose positions continue after the cached ones. This computes
        the same logits as a full forward pass, without redoing the earlier tokens.
        """
        B, T = idx.shape
        past = cache[0][0].shape[2] if cache else 0  # tokens already in the cache
        if past + T > self.config.block_size:
            raise ValueError(f"GPT.forward: {past + T} tokens, more than block_size {self.config.block_size}")
        pos = torch.arange(past, past + T, device=idx.device)  # (T,)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C) + (T, C) -> (B, T, C)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer)  # (B, T, C)
        return self.lm_head(self.ln_f(x))  # (B, T, V)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, generator=None, eos_id=None, pad_id=0):
        """Continue each row of idx (B, P) by up to max_new_tokens tokens -> (B, P + n), n <= max_new_tokens.

        temperature 0 is greedy (argmax); otherwise sample from softmax(logits / temperature). A row that
        has produced `eos_id` is finished: it gets `pad_id` from then on, and the loop stops early once
        every row is finished. All prompts must have the same length P (fixed-length prompts need no
        left padding). P + max_new_tokens must fit in block_size.
        """
        if temperature < 0:
            raise ValueError(f"GPT.generate: temperature must be >= 0, got {temperature}")
        cache = []  # keys and values of every token so far, filled by the first forward pass
        finished = torch.zeros(idx.shape[0], dtype=torch.bool, device=idx.device)  # (B,)
        new_tokens = idx  # the first pass reads the whole prompt, later passes one token each
        for _ in range(max_new_tokens):
            logits = self(new_tokens, cache)[:, -1, :]  # only the last position matters: (B, V)
            if temperature == 0:
                next_id = logits.argmax(-1)  # (B,)
            else:
                probs = F.softmax(logits / temperature, dim=-1)  # (B, V)
                next_id = torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)
            if eos_id is not None:
                next_id = torch.where(finished, torch.full_like(next_id, pad_id), next_id)  # pad after EOS
                finished |= next_id == eos_id
            new_tokens = next_id[:, None]  # (B, 1)
            idx = torch.cat([idx, new_tokens], dim=1)  # (B, T + 1)
            if eos_id is not None and bool(finished.all()):
                break
        return idx


def disable_dropout(model: nn.Module) -> nn.Module:
    """Set the rate of every ``nn.Dropout`` in `model` to 0, in place; returns `model`.

    What the RL and preference trainers do to the policy they train (and RLHF to its critic), as TRL's
    ``disable_dropout_in_model`` (huggingface/trl@v1.16.0, trl/trainer/utils.py): with dropout on, the
    policy in train mode scores the rollout's tokens with a random mask, so the first inner step's ratio
    pi / pi_old is not 1 and DPO's first loss is not ln 2. ``GPTConfig(dropout=0.1)`` (what ``hf.from_hf``
    gives for a default GPT-2 config) needs it; at the course's default, dropout 0, it changes nothing.
    The ``config.dropout`` of every GPT inside is set to 0 too, so that ``hf.to_hf`` exports it as it computes.
    Used by ``dpo``, ``grpo``, ``rlhf`` (policy and critic) and ``reward_model`` (TRL's RewardConfig default).
    """
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "config", None), GPTConfig):  # the GPT itself, or a GPT inside a wrapper
            module.config.dropout = 0.0
    return model
