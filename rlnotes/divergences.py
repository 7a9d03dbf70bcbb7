"""How far apart are two policies? Exact KL, sample estimators of KL, and PPO's adaptive KL coefficient.

TRPO bounds the KL between the old and new policy (``04_trpo``), PPO can penalize it (``05_ppo``),
and GRPO / RLHF keep the policy near a reference model with a per-token KL estimate (``07_grpo``).

KL(p || q) = E_{x ~ p}[log p(x) - log q(x)] >= 0, zero only when p = q; it is not symmetric.
Shapes: V categories (vocabulary, actions), D action dimensions.
"""

from __future__ import annotations

import torch

from . import _checks

__all__ = ["kl_categorical", "kl_gaussian", "kl_estimate", "AdaptiveKL", "ProportionalKL"]


def kl_categorical(logits_p, logits_q):
    """Exact KL(p || q) between categorical distributions given by logits, over the last dim.

    Introduced in ``04_trpo``. Intuition: the expected extra surprise of coding samples of p with q:
    ``sum_x p(x) * (log p(x) - log q(x))``. Computed with ``log_softmax``, so that logits of +-1e4 give
    finite results (softmax then log would give log 0 = -inf).

    Numerical safety: a category with p(x) = 0 (a -inf logit of p, e.g. a masked action) adds exactly 0,
    whatever q says there, as ``torch.distributions.kl_divergence`` (no ``0 * inf = NaN``, and no NaN
    in the gradient); a category where q is 0 but p is not gives +inf, the true value.

    Args:
        logits_p: (..., V); unnormalized log-probabilities of p.
        logits_q: (..., V); broadcasts with `logits_p`.

    Returns:
        (...,) KL per distribution.
    """
    _checks.broadcastable("kl_categorical", logits_p=logits_p, logits_q=logits_q)
    logp = torch.log_softmax(logits_p, dim=-1)
    logq = torch.log_softmax(logits_q, dim=-1)
    p = logp.exp()
    log_ratio = torch.where(p > 0, logp - logq, torch.zeros_like(logp))  # 0 where p = 0: no -inf, no NaN to weigh
    return (p * log_ratio).sum(-1)


def kl_gaussian(mean_p, std_p, mean_q, std_q):
    """Exact KL(p || q) between diagonal Gaussians, summed over the last dim (independent dimensions).

    Introduced in ``04_trpo``. Per dimension:

        log(std_q / std_p) + (std_p^2 + (mean_p - mean_q)^2) / (2 std_q^2) - 1/2

    Intuition: a mismatch of means costs its squared distance measured in units of q's std; a
    mismatch of widths costs even with equal means.

    Numerical safety: the width terms are computed together as ``(expm1(u) - u) / 2`` with
    ``u = 2 log(std_p / std_q)``, which is exact near u = 0, instead of as a difference of O(1) terms
    whose rounding made the KL of nearly equal stds negative (-6e-8 in float32 for stds 1e-4 apart);
    the result is >= 0, and exactly 0 for equal inputs.

    Args:
        mean_p, std_p: (..., D); p's mean and standard deviation (> 0).
        mean_q, std_q: (..., D); q's; all four broadcast together.

    Returns:
        (...,) KL per distribution.
    """
    _checks.broadcastable("kl_gaussian", mean_p=mean_p, std_p=std_p, mean_q=mean_q, std_q=std_q)
    for name, std in (("std_p", std_p), ("std_q", std_q)):
        if not bool((std > 0).all()):
            raise ValueError(f"kl_gaussian: {name} must be > 0 everywhere, got min {float(std.min())}")
    u = 2.0 * (torch.log(std_p) - torch.log(std_q))  # log(std_p^2 / std_q^2), without over/underflow of the ratio
    width = 0.5 * (torch.expm1(u) - u).clamp(min=0.0)  # = log(std_q / std_p) + std_p^2 / (2 std_q^2) - 1/2 >= 0
    per_dim = width + (mean_p - mean_q) ** 2 / (2 * std_q**2)
    return per_dim.sum(-1)


KL_ESTIMATORS = ("k1", "k2", "k3")


def kl_estimate(logp, logq, kind="k3"):
    """Per-sample estimate of KL(p || q) from samples x ~ p (John Schulman, "Approximating KL divergence", 2020).

    Introduced in ``05_ppo`` (``approx_kl``) and used in ``07_grpo`` (the KL to the reference model).
    With ``log r = log q(x) - log p(x)``:

        k1 = -log r                 unbiased, but half the samples are negative
        k2 = (log r)^2 / 2          biased (fine when p and q are close), never negative
        k3 = (r - 1) - log r        unbiased AND never negative: r - 1 has mean 0 under p and
                                    r - 1 >= log r; this is the per-token KL of GRPO (DeepSeekMath;
                                    huggingface/trl@v1.16.0, trl/trainer/grpo_trainer.py, _compute_loss)

    These are estimates of the VALUE of KL(p || q). Put into a loss and differentiated through log p on
    samples of p, their expected gradients differ: k1's is 0, k2's is grad KL(p || q), and k3's is
    grad KL(q || p), the KL in the other direction from the one estimated: with p = pi_theta and
    q = pi_ref, KL(pi_ref || pi_theta) (``lm.grpo``'s module docstring; NeMo-RL PR #2506;
    tests/test_kl_estimator_gradients.py).

    k3 uses ``expm1`` for r - 1, exact near r = 1. It can be +inf when log r is huge (q puts far more
    mass on x than p, e.g. log r > 709 in float64, > 88 in float32); it is never NaN and never negative.

    Numerical safety: a sample with log p = log q = -inf (a masked entry, impossible under both) has
    log r = 0, so all three estimates are 0 there instead of NaN; an infinite log r (one of the two is
    -inf) gives k2 = k3 = +inf (not ``inf - inf = NaN``). Neither case puts NaN into the gradient of
    the other entries, so such an entry can be masked out afterwards.

    Args:
        logp: any shape; log p(x) of samples drawn from p (e.g. the policy's token log-probs).
        logq: same shape; log q(x) of the same samples (e.g. the reference model's).
        kind: "k1", "k2" or "k3".

    Returns:
        per-sample estimates, shape of `logp`; their mean estimates KL(p || q).
    """
    _checks.one_of("kl_estimate", "kind", kind, KL_ESTIMATORS)
    _checks.same_shape("kl_estimate", logp=logp, logq=logq)
    both_impossible = torch.isneginf(logp) & torch.isneginf(logq)  # -inf - (-inf) would be NaN
    log_r = torch.where(both_impossible, torch.zeros_like(logp), logq - logp)
    if kind == "k1":
        return -log_r
    infinite = torch.isinf(log_r)  # k2 = k3 = +inf there; computed on 0 instead, so no inf - inf or 0 * inf
    safe = torch.where(infinite, torch.zeros_like(log_r), log_r)
    if kind == "k2":
        estimate = 0.5 * safe**2
    else:  # expm1(x) >= x holds exactly, but a last-bit rounding of expm1 could still dip below 0
        estimate = (torch.expm1(safe) - safe).clamp(min=0.0)
    return torch.where(infinite, torch.full_like(estimate, float("inf")), estimate)


class AdaptiveKL:
    """PPO's adaptive KL penalty coefficient (Schulman et al. 2017, "Proximal Policy Optimization", sec. 4).

    Introduced in ``05_ppo``. The loss is ``-surrogate + beta * KL``; after each policy update, with
    the observed KL d and the target d_targ:

        d < d_targ / 1.5  ->  beta / 2   (the policy barely moved: penalize less)
        d > d_targ * 1.5  ->  beta * 2   (it moved too far: penalize more)
        otherwise beta stays (both comparisons are strict).

    The paper notes that 1.5 and 2 are heuristic and the result is not very sensitive to them.
    This doubling rule is the PPO paper's; the RLHF papers that adapt beta (Ziegler et al. 2019) use a
    proportional controller instead: `ProportionalKL`.

    Args:
        target: d_targ, > 0.
        init_beta: the starting beta, > 0.

    Attributes:
        beta: the current coefficient.
    """

    def __init__(self, target, init_beta=1.0):
        self.target = _checks.positive("AdaptiveKL", "target", target)
        self.beta = _checks.positive("AdaptiveKL", "init_beta", init_beta)

    def update(self, observed_kl):
        """Adapt beta to the KL observed after an update (float or 0-d tensor); return the new beta."""
        kl = _checks.finite_number("AdaptiveKL.update", "observed_kl", observed_kl)
        if kl > 1.5 * self.target:
            self.beta *= 2.0
        elif kl < self.target / 1.5:
            self.beta /= 2.0
        return self.beta

    def __repr__(self):
        return f"AdaptiveKL(target={self.target}, beta={self.beta})"


class ProportionalKL:
    """Ziegler et al.'s proportional KL controller (2019, "Fine-Tuning Language Models from Human Preferences",
    arXiv:1909.08593, sec. 2.2), as ``AdaptiveKLController`` implements it in TRL 0.x (trl/trainer/utils.py;
    TRL 1.16 has no PPO trainer) and in CarperAI/trlx.

    Introduced in ``08_rlhf``. Unlike `AdaptiveKL`'s jumps (x2, /2), beta moves a little every update, in
    proportion to how far the observed KL d is from the target, the error clipped to +-20 %:

        e = clip(d / target - 1, -0.2, 0.2)
        beta <- beta * (1 + e * n / horizon)

    with n the number of samples (answers) the update used; the paper's K_beta = 0.1 is ``n / horizon``.

    Args:
        target: the target KL, > 0 (per answer, in nats, for RLHF).
        init_beta: the starting beta, > 0.
        horizon: > 0; the larger, the slower beta moves (TRL's default 10000).

    Attributes:
        beta: the current coefficient.
    """

    def __init__(self, target, init_beta=1.0, horizon=10000):
        self.target = _checks.positive("ProportionalKL", "target", target)
        self.beta = _checks.positive("ProportionalKL", "init_beta", init_beta)
        self.horizon = _checks.positive("ProportionalKL", "horizon", horizon)

    def update(self, observed_kl, n_steps=1):
        """Adapt beta to the KL observed on a batch of `n_steps` samples (>= 1); return the new beta."""
        kl = _checks.finite_number("ProportionalKL.update", "observed_kl", observed_kl)
        n = _checks.positive("ProportionalKL.update", "n_steps", n_steps)
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.beta *= 1.0 + error * n / self.horizon
        return self.beta

    def __repr__(self):
        return f"ProportionalKL(target={self.target}, beta={self.beta}, horizon={self.horizon})"
