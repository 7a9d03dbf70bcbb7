"""The exact check of DPO's derivation on a "bandit LM": X prompts, each with K whole responses.

Introduced in ``06_dpo``. A language model's policy pi(y | x) over whole answers is, for a fixed
prompt, just a categorical distribution. With a handful of answers everything DPO's derivation talks
about can be computed exactly:

* the KL-regularized objective ``J(pi) = E_pi[r] - beta * KL(pi || pi_ref)``;
* its maximiser in closed form, ``pi*(y|x) = pi_ref(y|x) * exp(r(x, y) / beta) / Z(x)``;
* the reward it implies, ``beta * log(pi* / pi_ref) = r - beta * log Z(x)``: Z is a per-prompt constant;
* Bradley-Terry preferences sampled from a known reward, and the policy that minimises the DPO loss
  on them, found by a deterministic optimizer (the loss is convex in the logits).

Shapes: X prompts, K responses, n sampled comparisons. Logits are unnormalised log-probabilities
(X, K); log-probabilities are ``logits.log_softmax(-1)``.
"""

from __future__ import annotations

import torch

from rlnotes.divergences import kl_categorical
from rlnotes.preference import bradley_terry, dpo_loss, implicit_reward, reward_model_loss

__all__ = [
    "log_partition", "optimal_logprobs", "kl_regularized_objective", "implied_reward", "sample_preferences",
    "preference_counts", "expected_counts", "dpo_objective", "fit_dpo", "fit_reward_model",
]


def _check(fn, ref_logits, rewards=None):
    if ref_logits.dim() != 2:
        raise ValueError(f"{fn}: ref_logits must be (X, K), got {tuple(ref_logits.shape)}")
    if rewards is not None and rewards.shape != ref_logits.shape:
        raise ValueError(f"{fn}: rewards {tuple(rewards.shape)} and ref_logits {tuple(ref_logits.shape)} differ in shape")


def _check_beta(fn, beta):
    if not float(beta) > 0:
        raise ValueError(f"{fn}: beta must be > 0, got {beta}")


def log_partition(ref_logits, rewards, beta):
    """log Z(x) = log sum_y pi_ref(y|x) exp(r(x, y) / beta): (X, K), (X, K) -> (X,)."""
    _check("log_partition", ref_logits, rewards)
    _check_beta("log_partition", beta)
    return torch.logsumexp(ref_logits.log_softmax(-1) + rewards / beta, dim=-1)


def optimal_logprobs(ref_logits, rewards, beta):
    """log pi*(y|x) = log pi_ref(y|x) + r(x, y) / beta - log Z(x), the closed form: -> (X, K)."""
    _check("optimal_logprobs", ref_logits, rewards)
    _check_beta("optimal_logprobs", beta)
    return ref_logits.log_softmax(-1) + rewards / beta - log_partition(ref_logits, rewards, beta)[:, None]


def kl_regularized_objective(logits, ref_logits, rewards, beta):
    """J(pi) = E_{y ~ pi}[r(x, y)] - beta * KL(pi(.|x) || pi_ref(.|x)), per prompt: -> (X,).

    `logits` (X, K) define pi. The identity behind the closed form: J(pi) = beta * log Z(x) -
    beta * KL(pi || pi*), so J is largest, and equal to beta * log Z, exactly at pi = pi*.
    """
    _check("kl_regularized_objective", ref_logits, rewards)
    _check_beta("kl_regularized_objective", beta)
    p = logits.softmax(-1)
    return (p * rewards).sum(-1) - beta * kl_categorical(logits, ref_logits)


def implied_reward(logits, ref_logits, beta):
    """The reward a policy implies: beta * log(pi(y|x) / pi_ref(y|x)): (X, K) -> (X, K).

    For pi = pi* it equals r(x, y) - beta * log Z(x): the true reward up to a per-prompt constant.
    """
    _check("implied_reward", ref_logits, logits)
    _check_beta("implied_reward", beta)
    return implicit_reward(logits.log_softmax(-1), ref_logits.log_softmax(-1), beta)


def sample_preferences(rewards, n, generator=None):
    """n comparisons labelled by Bradley-Terry -> (prompt, chosen, rejected), each (n,) int64.

    For each comparison: a prompt uniformly, two DIFFERENT responses uniformly, and the first one
    wins with probability sigmoid(r_first - r_second) (``rlnotes.preference.bradley_terry``).
    """
    if rewards.dim() != 2 or rewards.shape[1] < 2:
        raise ValueError(f"sample_preferences: rewards must be (X, K) with K >= 2, got {tuple(rewards.shape)}")
    if n < 1:
        raise ValueError(f"sample_preferences: n must be >= 1, got {n}")
    X, K = rewards.shape
    prompt = torch.randint(X, (n,), generator=generator)
    first = torch.randint(K, (n,), generator=generator)
    second = (first + torch.randint(1, K, (n,), generator=generator)) % K  # uniform over the other K - 1
    p_first = bradley_terry(rewards[prompt, first], rewards[prompt, second])  # (n,)
    first_wins = torch.rand(n, generator=generator, dtype=p_first.dtype) < p_first
    chosen = torch.where(first_wins, first, second)
    rejected = torch.where(first_wins, second, first)
    return prompt, chosen, rejected


def preference_counts(prompt, chosen, rejected, X, K, dtype=torch.float64):
    """counts[x, i, j] = how many times response i beat response j on prompt x: -> (X, K, K)."""
    counts = torch.zeros(X * K * K, dtype=dtype)
    counts.index_add_(0, (prompt * K + chosen) * K + rejected, torch.ones(len(prompt), dtype=dtype))
    return counts.view(X, K, K)


def expected_counts(rewards, per_pair=1.0):
    """The infinite-data limit: counts[x, i, j] = per_pair * sigmoid(r_i - r_j) for i != j: -> (X, K, K)."""
    p = bradley_terry(rewards[:, :, None], rewards[:, None, :])  # (X, K, K): P(i beats j)
    return per_pair * p * (1 - torch.eye(rewards.shape[1], dtype=rewards.dtype))


def dpo_objective(logits, ref_logits, counts, beta, loss_type="sigmoid"):
    """Mean DPO loss of the policy `logits` (X, K) over all comparisons in `counts` (X, K, K) -> scalar.

    Every (x, i beats j) contributes ``dpo_loss(log pi(i|x), log pi(j|x), log pi_ref(i|x),
    log pi_ref(j|x))``, weighted by its count.
    """
    _check("dpo_objective", ref_logits, logits)
    X, K = logits.shape
    if counts.shape != (X, K, K):
        raise ValueError(f"dpo_objective: counts must be (X, K, K) = {(X, K, K)}, got {tuple(counts.shape)}")
    logp, logq = logits.log_softmax(-1), ref_logits.log_softmax(-1)
    pc, pr = logp[:, :, None].expand(X, K, K), logp[:, None, :].expand(X, K, K)  # [x, i, j]: i chosen, j rejected
    rc, rr = logq[:, :, None].expand(X, K, K), logq[:, None, :].expand(X, K, K)
    losses, _, _ = dpo_loss(pc, pr, rc, rr, beta=beta, loss_type=loss_type)  # (X, K, K)
    return (losses * counts).sum() / counts.sum()


def _minimise(fn, init, max_iter=500):
    """Minimise a smooth convex fn(params) with L-BFGS and a strong-Wolfe line search, in float64."""
    params = init.detach().clone().to(torch.float64).requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [params], lr=1.0, max_iter=max_iter, tolerance_grad=1e-12, tolerance_change=1e-15,
        history_size=50, line_search_fn="strong_wolfe",
    )

    def closure():
        optimizer.zero_grad()
        loss = fn(params)
        loss.backward()
        return loss

    for _ in range(5):  # restarts in case the line search stops early
        optimizer.step(closure)
    return params.detach()


def fit_dpo(ref_logits, counts, beta, loss_type="sigmoid", max_iter=500):
    """The policy logits (X, K) that minimise the DPO loss on `counts`, started from pi_ref.

    The loss depends on the logits only through differences within a prompt, so the optimum is
    defined up to a per-prompt constant: compare ``log_softmax`` of the result, not the raw logits.
    """
    _check("fit_dpo", ref_logits)
    _check_beta("fit_dpo", beta)
    ref = ref_logits.detach().to(torch.float64)
    return _minimise(lambda logits: dpo_objective(logits, ref, counts, beta, loss_type), ref, max_iter)


def fit_reward_model(counts, max_iter=500):
    """Maximum-likelihood Bradley-Terry rewards (X, K) from `counts` (X, K, K), centred per prompt.

    The first stage of RLHF on this toy problem: one free reward per (prompt, response), fitted with
    ``-log sigmoid(r_i - r_j)`` weighted by the counts. Rewards are only defined up to a per-prompt
    constant; the result is centred to mean 0 on each prompt.
    """
    X, K, _ = counts.shape

    def nll(r):
        losses = reward_model_loss(r[:, :, None].expand(X, K, K), r[:, None, :].expand(X, K, K))  # [x, i, j]: i beat j
        return (losses * counts).sum() / counts.sum()

    r = _minimise(nll, torch.zeros(X, K, dtype=torch.float64), max_iter)
    return r - r.mean(-1, keepdim=True)
