"""Batched sampling with temperature and EOS, and accuracy under the verifiable reward.

Introduced in ``06_dpo``. Accuracy is reported two ways, and they differ a lot after SFT on a noisy
teacher: **greedy** (temperature 0: the model's single most likely answer) and **sampled** at
temperature 1 (the model's whole distribution: what RL and preference methods sample from and change).
"""

from __future__ import annotations

import torch

__all__ = ["sample", "evaluate"]


@torch.no_grad()
def sample(model, prompts: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, generator=None,
           eos_id: int = 1, pad_id: int = 0, batch_size: int = 1024):
    """Complete every prompt once -> completions (B, max_new_tokens), padded after EOS.

    prompts: (B, P) ids of equal length. temperature: 0 for greedy, > 0 to sample. A completion that
    has not produced EOS within max_new_tokens is cut there (it has no EOS: the reward counts it wrong).
    The model is put in eval mode for sampling and restored afterwards. Rows are processed in chunks of
    `batch_size` to bound memory.
    """
    if temperature < 0:
        raise ValueError(f"sample: temperature must be >= 0, got {temperature}")
    if max_new_tokens < 1:
        raise ValueError(f"sample: max_new_tokens must be >= 1, got {max_new_tokens}")
    was_training = model.training
    model.eval()
    P = prompts.shape[1]
    out = torch.full((prompts.shape[0], max_new_tokens), pad_id, dtype=torch.long)
    for start in range(0, prompts.shape[0], batch_size):
        chunk = prompts[start : start + batch_size]
        full = model.generate(chunk, max_new_tokens, temperature, generator, eos_id=eos_id, pad_id=pad_id)  # (b, P + n)
        out[start : start + len(chunk), : full.shape[1] - P] = full[:, P:]  # n may be < max_new_tokens: rest stays pad
    model.train(was_training)
    return out


@torch.no_grad()
def evaluate(model, task, pairs: torch.Tensor, temperature: float = 0.0, generator=None, samples_per_prompt: int = 1) -> float:
    """Share of exactly right answers (task.reward) on `pairs` (B, 2): a float in [0, 1].

    With temperature > 0, `samples_per_prompt` answers per prompt are drawn and all are scored (the
    estimate of the model's probability of answering right, averaged over prompts). `pairs` with no
    rows raise ValueError (an accuracy over no prompt is undefined), at every temperature.
    """
    if len(pairs) == 0:
        raise ValueError(f"evaluate: pairs {tuple(pairs.shape)} has no rows; an accuracy needs at least one prompt")
    if samples_per_prompt < 1:
        raise ValueError(f"evaluate: samples_per_prompt must be >= 1, got {samples_per_prompt}")
    pairs = pairs.repeat_interleave(samples_per_prompt, dim=0)  # (B * k, 2)
    tok = task.tokenizer
    completions = sample(model, task.prompts(pairs), task.max_new_tokens, temperature, generator, tok.eos_id, tok.pad_id)
    return float(task.reward(pairs, completions).mean())
