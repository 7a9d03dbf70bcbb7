"""Log-probabilities of completions: per token, masked, and summed or averaged per sequence.

Introduced in ``06_dpo``; every LM chapter scores answers with these. A batch is a (B, L) tensor of
``prompt + completion + padding`` ids with a (B, L) `completion_mask` that is True on the completion's
tokens INCLUDING its EOS, and False on the prompt and on the padding. The classic traps, avoided here:

* the shift: logits at position t predict token t + 1, so log-probs are (B, L - 1) and the mask is
  ``completion_mask[:, 1:]``;
* the prompt is given, not generated: its tokens are masked out;
* padding is masked out, but EOS is counted: stopping at the right place is part of the answer.

Precision: log-probs and their sums are computed in float32 whatever the model's dtype (a bf16 model
imported through ``hf.from_hf``): bf16's 8-bit mantissa rounds a 240-token answer's sum to 4-nat steps
and a DPO logit of two such sums to 0. TRL upcasts the logits the same way (huggingface/trl PR #942).
Float32 and float64 models are computed as they are.
"""

from __future__ import annotations

import torch

from rlnotes._checks import at_least_float32

__all__ = ["collate", "token_logprobs", "masked_sum", "masked_mean", "sequence_logprobs", "token_mean_nll"]


def collate(prompts: torch.Tensor, completions: torch.Tensor, eos_id: int = 1):
    """Glue prompts and completions into one batch -> (tokens (B, P + N), completion_mask (B, P + N)).

    prompts: (B, P) ids, all of length P (fixed-length prompts). completions: (B, N) ids: each row is
    an answer that ends with its first EOS, followed by padding, or a row of N real tokens with no EOS
    (an answer cut at the generation budget). The mask is True on the completion up to AND including
    its first EOS, False on the prompt and after the EOS. It is built from the EOS position, not from
    the padding id, so a padding id that an untrained model happens to generate before EOS is still
    scored as the real token it is.
    """
    if prompts.dim() != 2 or completions.dim() != 2 or prompts.shape[0] != completions.shape[0]:
        raise ValueError(
            f"collate: prompts {tuple(prompts.shape)} and completions {tuple(completions.shape)} must be (B, P) and (B, N)"
        )
    is_eos = completions == eos_id  # (B, N)
    after_eos = (is_eos.long().cumsum(-1) - is_eos.long()) > 0  # an EOS strictly before this position: (B, N)
    tokens = torch.cat([prompts, completions], dim=1)  # (B, P + N)
    mask = torch.cat([torch.zeros_like(prompts, dtype=torch.bool), ~after_eos], dim=1)  # (B, P + N)
    return tokens, mask


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] for every position: logits (B, T, V), targets (B, T) -> (B, T).

    Computed as ``logit[target] - logsumexp(logits)``, which never materialises the (B, T, V)
    log_softmax tensor; tests check it against ``log_softmax(...).gather(...)``. bf16 / fp16 logits are
    upcast to float32 first (the module's note on precision).
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(f"token_logprobs: logits {tuple(logits.shape)} must be (B, T, V) "
                         f"and targets {tuple(targets.shape)} (B, T)")
    logits = at_least_float32(logits)
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (B, T, V) -> (B, T)
    return picked - torch.logsumexp(logits, dim=-1)  # (B, T)


def masked_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of `values` where `mask` is True, along the last dim: (B, T), (B, T) -> (B,).

    Numerical safety: masked entries are dropped by selection, not multiplied by 0, so a NaN or -inf
    there (a log-prob of padding) does not leak into the sum or into the gradient of the other entries.
    bf16 / fp16 values are summed in float32 (the sum is float32).
    """
    if values.shape != mask.shape:
        raise ValueError(f"masked_sum: values {tuple(values.shape)} and mask {tuple(mask.shape)} differ in shape")
    values = at_least_float32(values)
    kept = torch.where(mask.bool(), values, torch.zeros_like(values))  # select, not index: keeps (B,) and the gradient
    return kept.sum(-1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `values` where `mask` is True, per row: (B, T), (B, T) -> (B,). A row with no True raises.

    Numerical safety: as `masked_sum`, a NaN or inf at a masked entry does not leak into the mean.
    """
    if values.shape != mask.shape:
        raise ValueError(f"masked_mean: values {tuple(values.shape)} and mask {tuple(mask.shape)} differ in shape")
    counts = mask.sum(-1)  # (B,)
    if bool((counts == 0).any()):
        raise ValueError("masked_mean: mask has a row with no True entry (an empty completion)")
    return masked_sum(values, mask) / counts


def sequence_logprobs(model, tokens: torch.Tensor, completion_mask: torch.Tensor, temperature: float = 1.0) -> dict:
    """Score the completions of a batch under `model` (gradients flow unless called under no_grad).

    The model is called as it is (train or eval mode): callers that score a policy put it in eval
    mode or turn its dropout off (``model.disable_dropout``), so that scoring is deterministic.

    Args:
        model: maps ids (B, T) to logits (B, T, V).
        tokens: (B, L) ids, prompt + completion + padding (``collate``).
        completion_mask: (B, L) bool, True on the completion's tokens including EOS.
        temperature: > 0; the log-probs are those of softmax(logits / temperature), the distribution
            that ``sampling.sample`` draws from at that temperature. TRL divides the logits of the
            policy, the old policy and the reference by the same temperature
            (huggingface/trl@v1.16.0, trl/trainer/grpo_trainer.py, ``_get_per_token_logps_and_entropies``).
            At 1 the logits are used as they are (no division).

    Returns a dict:
        ``sum`` (B,): log pi(y | x), the sequence log-prob (what DPO, KTO and the RL chapters use);
        ``mean`` (B,): sum / number of completion tokens (length-normalised; IPO in TRL, SimPO);
        ``per_token`` (B, L - 1): log pi(token t + 1 | tokens <= t), zero where masked (exactly 0, even
            where the model gives a masked token log-prob -inf: selected, not multiplied by the mask);
        ``mask`` (B, L - 1): the shifted completion mask;
        ``logits`` (B, L - 1, V): the logits that produced them, divided by `temperature`, in float32 or
            float64 (for exact per-token KL).
    """
    if tokens.shape != completion_mask.shape or tokens.dim() != 2:
        raise ValueError(
            f"sequence_logprobs: tokens {tuple(tokens.shape)} and completion_mask {tuple(completion_mask.shape)} "
            "must both be (B, L)"
        )
    if not temperature > 0:
        raise ValueError(f"sequence_logprobs: temperature must be > 0, got {temperature}")
    logits = at_least_float32(model(tokens[:, :-1]))  # position t predicts token t + 1: (B, L - 1, V)
    if temperature != 1.0:
        logits = logits / temperature  # the sampled distribution softmax(logits / T)
    mask = completion_mask[:, 1:]  # (B, L - 1), aligned with the predicted tokens
    logp = token_logprobs(logits, tokens[:, 1:])  # (B, L - 1)
    per_token = torch.where(mask.bool(), logp, torch.zeros_like(logp))  # (B, L - 1); -inf * 0 would be NaN
    return {
        "sum": masked_sum(per_token, mask),
        "mean": masked_mean(per_token, mask),
        "per_token": per_token,
        "mask": mask,
        "logits": logits,
    }


def token_mean_nll(out: dict, rows=None) -> torch.Tensor:
    """Mean negative log-likelihood over every completion token of the batch -> scalar.

    out: a ``sequence_logprobs`` result; rows: optional bool (B,) or index selecting the sequences that
    count (DPO: the chosen answers; KTO: the thumbs-up ones). Each TOKEN weighs the same (a long answer
    counts more than a short one), as ``cross_entropy(..., ignore_index=pad)`` in SFT trainers. This is
    SFT's loss and the NLL term of DPO+NLL (RPO) and KTO. With no token selected it is 0, not NaN.
    """
    per_token, mask = out["per_token"], out["mask"]  # (B, L - 1) each
    if rows is not None:
        per_token, mask = per_token[rows], mask[rows]
    return -per_token.sum() / mask.sum().clamp(min=1)
