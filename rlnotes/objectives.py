"""Policy-gradient loss, the clipped surrogate, the value loss, and per-token loss aggregation.

Every function returns something to MINIMIZE (the negative of the objective the papers maximize).
PPO, GRPO and the RLHF chapter share `clipped_surrogate`; the LLM chapters then choose how to average
per-token losses with `aggregate`.

Shapes: B batch (samples or sequences), L sequence length. Log-probabilities are of the actions
(tokens) actually taken.
"""

from __future__ import annotations

import torch

from . import _checks
from .advantages import no_spread

__all__ = [
    "pg_loss", "probability_ratio", "surrogate_loss", "clipped_surrogate", "value_loss", "aggregate",
    "clip_fraction", "clip_active", "explained_variance",
]

# exp(20) ~ 4.9e8: a larger probability ratio means the sample could not have come from the old
# policy; capping the log-ratio keeps exp() finite (no inf, no inf * 0 = NaN) at extreme log-probs.
MAX_LOG_RATIO = 20.0


def pg_loss(logp, advantages):
    """REINFORCE / vanilla policy-gradient loss ``-(logp * A).mean()``.

    Introduced in ``02_policy_gradient``. Intuition: its gradient is the log-derivative estimate
    ``-mean(A * grad log pi(a|s))``: make actions that did better than expected more likely. The
    advantages are detached: they weigh the gradient, they are not something to push on.

    Args:
        logp: (B,) or any shape, at least one element; log pi(a|s) of the taken actions, with gradient.
        advantages: `logp`'s shape, or the same number of dims with 1s (e.g. (B, 1) over (B, L)
            tokens), or a 0-d scalar; a (B,) tensor over (B, L) raises even when B == L.

    Returns:
        scalar loss. An empty `logp` raises ValueError (its mean would be NaN).
    """
    _checks.broadcasts_to("pg_loss", "advantages", advantages, "logp", logp)
    _checks.non_empty("pg_loss", "logp", logp, "elements")
    return -(logp * advantages.detach()).mean()


def probability_ratio(logp, old_logp):
    """``r = pi(a|s) / pi_old(a|s) = exp(logp - old_logp)``, with `old_logp` detached.

    Introduced in ``04_trpo``. Intuition: how much more (r > 1) or less (r < 1) likely the action has
    become since the data was collected; r = 1 at the old parameters. The log-ratio is capped at
    ``MAX_LOG_RATIO`` so that exp() stays finite. The old policy is data: its log-probs get no gradient.

    Numerical safety: where both log-probs are -inf (a masked entry, impossible under both policies) the
    ratio is 1, not ``exp(-inf + inf) = NaN``, so masking the loss there afterwards leaves no NaN in the
    loss or its gradient.

    Args:
        logp: any shape; log-probs under the current policy, with gradient.
        old_logp: same shape; log-probs under the policy that sampled the data.

    Returns:
        ratios, shape of `logp`.
    """
    _checks.same_shape("probability_ratio", logp=logp, old_logp=old_logp)
    old_logp = old_logp.detach()
    both_impossible = torch.isneginf(logp) & torch.isneginf(old_logp)
    log_ratio = torch.where(both_impossible, torch.zeros_like(logp), logp - old_logp)
    return torch.exp(log_ratio.clamp(max=MAX_LOG_RATIO))


def surrogate_loss(logp, old_logp, advantages):
    """TRPO's importance-sampled surrogate, per element, as a loss: ``-r * A``.

    Introduced in ``04_trpo``. Intuition: the advantages were measured under the old policy; weighing
    each sample by r = pi / pi_old estimates how the NEW policy would do on the old data, without
    collecting new data. At the old parameters r = 1 and its gradient is the policy gradient
    (``grad r = r * grad log pi``), so this is `pg_loss` read as a function of the new parameters.
    TRPO maximizes its mean under a KL constraint, PPO's KL variant adds ``beta * KL`` to it.

    Args:
        logp: (B,) or (B, L); log-probs under the current policy, with gradient.
        old_logp: same shape; log-probs under the policy that sampled the data.
        advantages: broadcasts to `logp` with the same number of dims ((B, 1) over (B, L)) or 0-d.

    Returns:
        per-element loss, shape of `logp`.
    """
    _checks.same_shape("surrogate_loss", logp=logp, old_logp=old_logp)
    _checks.broadcasts_to("surrogate_loss", "advantages", advantages, "logp", logp)
    return -probability_ratio(logp, old_logp) * advantages


def clipped_surrogate(logp, old_logp, advantages, eps=0.2, eps_high=None):
    """PPO's clipped surrogate, per element, as a loss: ``-min(r * A, clip(r, 1 - eps, 1 + eps_high) * A)``.

    Introduced in ``05_ppo`` (reused by GRPO and RLHF). Intuition: ``r = pi / pi_old`` says how much
    more likely the action has become. Once r has moved past ``1 + eps`` in the direction the
    advantage asks for, the min picks the clipped, constant term and that sample's gradient is zero:
    the update cannot profit from moving the policy further from the one that collected the data.
    Moves that make things worse are never clipped (the min keeps the pessimistic term).

        r = exp(logp - old_logp)      (old_logp detached: the old policy is data, trap avoided)

    ``eps_high`` (DAPO's "clip-higher", Yu et al. 2025) sets the upper bound on its own, so that
    unlikely tokens with A > 0 can grow more; it defaults to ``eps``. Log-ratios are capped at
    ``MAX_LOG_RATIO`` (r <= e^20, beyond which the sample gives no gradient) so that the loss stays
    finite at extreme log-probs; ratios in any real run are far below the cap.

    Args:
        logp: (B,) or (B, L); log-probs under the current policy, with gradient.
        old_logp: same shape; log-probs under the policy that sampled the data.
        advantages: broadcasts to `logp` with the same number of dims, e.g. (B,) for (B,) or (B, 1)
            for per-sequence advantages over (B, L) tokens, or 0-d. A (B,) tensor over (B, L) raises
            ValueError even when B == L, where broadcasting would give token j answer j's advantage.
        eps: lower clip range, > 0.
        eps_high: upper clip range, > 0, or None for `eps`.

    Returns:
        per-element loss, shape of `logp`; reduce it with ``.mean()`` or `aggregate`.
    """
    eps = _checks.positive("clipped_surrogate", "eps", eps)
    eps_high = eps if eps_high is None else _checks.positive("clipped_surrogate", "eps_high", eps_high)
    _checks.same_shape("clipped_surrogate", logp=logp, old_logp=old_logp)
    _checks.broadcasts_to("clipped_surrogate", "advantages", advantages, "logp", logp)
    ratio = probability_ratio(logp, old_logp)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - eps, 1.0 + eps_high) * advantages
    return -torch.min(unclipped, clipped)


def value_loss(values, returns, old_values=None, clip=None):
    """Critic regression ``0.5 * mean((v - R)^2)``, optionally with PPO's value clipping.

    Introduced in ``05_ppo``. Intuition: the critic learns to predict the return. With value clipping
    (``old_values`` and ``clip``) the new prediction is also judged as if it had moved at most ``clip``
    away from the prediction made when the data was collected, and the larger (pessimistic) of the
    two errors is kept, as in CleanRL (vwxyzjn/cleanrl@2f4172e, cleanrl/ppo.py, ``args.clip_vloss``) and
    TRL's PPOTrainer (huggingface/trl@be8a087, trl/trainer/ppo_trainer.py, ``vpredclipped``; TRL 1.16, the
    version pinned in constraints.txt, no longer has a PPOTrainer):

        v_clip = old + clamp(v - old, -clip, clip)
        loss   = 0.5 * mean(max((v - R)^2, (v_clip - R)^2))

    Where the clipped error is the larger one, the sample gives no gradient.

    Args:
        values: (B,); V(s) with gradient. Squeeze the critic's (B, 1) output first: shapes must match
            exactly, because (B, 1) against (B,) would broadcast to (B, B) (a classic silent bug).
        returns: (B,); regression targets (e.g. GAE returns).
        old_values: (B,) or None; values at collection time. Without `clip` it is ignored.
        clip: > 0 or None; the clip range, which needs `old_values`.

    Returns:
        scalar loss. Empty `values` raise ValueError (their mean would be NaN).
    """
    _checks.same_shape("value_loss", values=values, returns=returns, old_values=old_values)
    _checks.non_empty("value_loss", "values", values)
    unclipped = (values - returns) ** 2
    if clip is None:
        return 0.5 * unclipped.mean()
    clip = _checks.positive("value_loss", "clip", clip)
    if old_values is None:
        raise ValueError("value_loss: clip needs old_values (the values at collection time)")
    old_values = old_values.detach()
    v_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
    return 0.5 * torch.max(unclipped, (v_clipped - returns) ** 2).mean()


AGGREGATION_MODES = ("grpo", "dapo", "dr_grpo")


def aggregate(per_token_loss, mask, mode="grpo", max_len=None):
    """Reduce per-token losses (B, L) to a scalar; the three choices of TRL's GRPOTrainer ``loss_type``.

    Introduced in ``07_grpo``. Intuition: who gets the weight, sequences or tokens?

        grpo:    mean over each sequence's tokens, then over sequences. Every sequence weighs the
                 same, so a token of a long answer counts less than a token of a short one.
        dapo:    sum over all tokens / number of tokens (DAPO's token-level loss): every token weighs
                 the same.
        dr_grpo: sum over all tokens / (B * max_len) (Dr. GRPO): a constant denominator, so no length
                 bias at all.

    Padding and prompt tokens are excluded by `mask`. As in TRL, token counts are clamped to at least
    1, so a fully masked sequence adds 0 instead of NaN. TRL's ``"dapo"`` divides by the number of
    tokens in the whole (gradient-accumulated, multi-process) batch; for one batch it equals TRL's
    ``"bnpo"`` and this ``"dapo"``.

    Numerical safety: masked tokens are dropped by selection (``torch.where``), not multiplied by 0, so
    a NaN or inf loss at padding does not leak into the result (``0 * nan`` would be NaN), nor into the
    gradient that flows back through this function.

    Args:
        per_token_loss: (B, L), or (..., L); e.g. `clipped_surrogate` on per-token log-probs.
        mask: same shape, bool or float; 1 for completion tokens that count.
        mode: "grpo", "dapo" or "dr_grpo".
        max_len: for dr_grpo, the maximum completion length (> 0); defaults to L = mask.shape[-1].

    Returns:
        scalar loss. A batch with no rows (B = 0) raises ValueError in every mode (the grpo mean and the
        dr_grpo denominator would be NaN, dapo's 0).
    """
    _checks.one_of("aggregate", "mode", mode, AGGREGATION_MODES)
    _checks.same_shape("aggregate", per_token_loss=per_token_loss, mask=mask)
    if per_token_loss.dim() == 0 or per_token_loss.shape[-1] == 0:
        shape = _checks.shape_str(per_token_loss)
        raise ValueError(f"aggregate: per_token_loss must be (B, L) with L >= 1, got {shape}")
    _checks.non_empty("aggregate", "per_token_loss", per_token_loss)
    # Checked against huggingface/trl@v1.16.0 (pinned in constraints.txt), trl/trainer/grpo_trainer.py,
    # GRPOTrainer._compute_loss, loss_type grpo / bnpo / dr_grpo / dapo: same numerators, same clamp(min=1) token
    # counts; dr_grpo divides by B * max_completion_length.
    mask = _checks.as_float("aggregate", "mask", mask, per_token_loss)
    masked = torch.where(mask.bool(), per_token_loss, torch.zeros_like(per_token_loss))  # (B, L), zeros at padding
    if mode == "grpo":
        per_sequence = masked.sum(-1) / mask.sum(-1).clamp(min=1.0)  # (B, L) -> (B,)
        return per_sequence.mean()
    if mode == "dapo":
        return masked.sum() / mask.sum().clamp(min=1.0)
    max_len = mask.shape[-1] if max_len is None else max_len
    max_len = _checks.positive("aggregate", "max_len", max_len)
    num_sequences = mask.numel() // mask.shape[-1]  # B, or the product of the leading dims
    return masked.sum() / (num_sequences * max_len)


# ---- diagnostics: defined once, logged by PPO and TRPO ------------------------------------------


def clip_fraction(logp, old_logp, eps=0.2, eps_high=None):
    """Fraction of samples whose ratio lies outside ``[1 - eps, 1 + eps_high]`` (a 0-d tensor).

    Introduced in ``05_ppo``. The diagnostic that CleanRL and Stable-Baselines3 log as ``clipfrac`` /
    ``clip_fraction``: ``mean(|r - 1| > eps)`` for a symmetric range. A value that climbs towards
    0.3 or more says the policy moves far within one batch (lower the learning rate or the epochs).
    It counts ratios outside the range whatever the advantage's sign; `clip_active` counts only the
    samples whose gradient the clip really removes.

    Args:
        logp, old_logp: same shape; log-probs under the current and the old policy.
        eps, eps_high: the clip range, > 0 (eps_high defaults to eps).

    Empty log-probs raise ValueError (the fraction of nothing is undefined).
    """
    eps = _checks.positive("clip_fraction", "eps", eps)
    eps_high = eps if eps_high is None else _checks.positive("clip_fraction", "eps_high", eps_high)
    _checks.non_empty("clip_fraction", "logp", logp, "elements")
    with torch.no_grad():
        ratio = probability_ratio(logp, old_logp)
        outside = (ratio < 1.0 - eps) | (ratio > 1.0 + eps_high)
        return outside.to(ratio.dtype).mean()


def clip_active(logp, old_logp, advantages, eps=0.2, eps_high=None):
    """Bool mask, shape of `logp`: the samples where `clipped_surrogate` takes the clipped, constant term.

    Introduced in ``05_ppo``: these samples give exactly zero gradient.

        A > 0 and r > 1 + eps_high     (already more likely enough)
        A < 0 and r < 1 - eps          (already less likely enough)

    Args:
        logp, old_logp: same shape; log-probs under the current and the old policy.
        advantages: broadcasts to `logp` with the same number of dims ((B, 1) over (B, L)) or 0-d.
        eps, eps_high: the clip range, > 0 (eps_high defaults to eps).
    """
    eps = _checks.positive("clip_active", "eps", eps)
    eps_high = eps if eps_high is None else _checks.positive("clip_active", "eps_high", eps_high)
    _checks.broadcasts_to("clip_active", "advantages", advantages, "logp", logp)
    with torch.no_grad():
        ratio = probability_ratio(logp, old_logp)
        return ((advantages > 0) & (ratio > 1.0 + eps_high)) | ((advantages < 0) & (ratio < 1.0 - eps))


def explained_variance(values, returns):
    """``1 - Var[returns - values] / Var[returns]`` (a 0-d tensor), as Stable-Baselines3 logs it.

    Introduced in ``05_ppo``. Intuition: how much of the spread of the returns the critic predicts.
    1 is a perfect critic, 0 is no better than predicting the mean, negative is worse than that.
    When the returns are all equal the ratio is undefined and the result is NaN (as in SB3).

    Numerical safety: "all equal" includes equal up to rounding (a std at most 16 eps * max|returns|,
    `advantages.no_spread`): float32 returns all 0.35 have a tiny nonzero variance, not 0, and dividing
    by it gave numbers like -1.7e15 instead of NaN.

    Args:
        values: (B,); the critic's predictions V(s).
        returns: (B,); the regression targets.
    """
    _checks.same_shape("explained_variance", values=values, returns=returns)
    if values.numel() < 2:
        raise ValueError(f"explained_variance: needs at least 2 samples, got values {_checks.shape_str(values)}")
    with torch.no_grad():
        var_returns = returns.var()
        if bool(no_spread(var_returns.sqrt(), returns)):
            return torch.full((), float("nan"), dtype=returns.dtype)
        return 1.0 - (returns - values).var() / var_returns
