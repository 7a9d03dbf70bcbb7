"""Returns, TD targets, GAE, normalization and group-relative advantages.

How good was an action, compared with what we expected? Every policy-gradient method in the course
answers with one of these functions; the algorithms call them and never re-derive the formulas.

Shapes: T steps, N parallel envs (optional), G group size. Time is always the first dimension of
rollout tensors; `terminated` and `truncated` are bool or 0./1. float tensors of the rewards' shape.

The classic trap, avoided here: an episode that ends because the task is over (`terminated`) has no
future, so its bootstrap is 0; an episode cut by a time limit (`truncated`) does have a future, worth
V(final observation). Both end the episode, so both stop the GAE recursion; only `terminated` stops
the bootstrap.
"""

from __future__ import annotations

import torch

from . import _checks

__all__ = ["discounted_returns", "td_target", "gae", "normalize", "group_relative"]

# A std of at most ROUNDING_SPREAD * eps(dtype) * max|x| is rounding noise, not spread: equal values whose
# float mean is off by an ulp have a std of up to ~3.5 eps * max|x| (measured, float32 and float64).
ROUNDING_SPREAD = 16


def no_spread(std, x, dim=None):
    """True where `std` is at the rounding level of `x`'s magnitude: the values are equal up to rounding.

    `std` is ``x.std()`` (dim=None, a 0-d tensor) or ``x.std(dim, keepdim=True)``; returns a bool tensor of
    `std`'s shape. NaN never counts as "no spread". Used wherever the package divides by a std.
    """
    size = x.abs().amax() if dim is None else x.abs().amax(dim=dim, keepdim=True)
    return std <= ROUNDING_SPREAD * torch.finfo(x.dtype).eps * size


def td_target(rewards, next_values, terminated, gamma):
    """One-step TD target: ``r + gamma * (1 - terminated) * V(s')``.

    Introduced in ``01_value_learning``. Intuition: re-predict the value once one step is known.
    The reward is real, the rest is still a guess (the critic's value of the next state), and a
    terminal state has no future, so its guess is cut.

    Args:
        rewards: (T,) or (T, N), or any shape; r_t.
        next_values: same shape; V(s_{t+1}), the value of the true next state.
        terminated: same shape, bool or float; 1 where s_{t+1} is terminal (never pass `truncated` here).
        gamma: discount in [0, 1].

    Numerical safety: the cut is a selection, not a product with 0, so a NaN or inf next value beyond a
    termination (or with gamma = 0) does not leak into the target (``0 * nan`` would be NaN).

    Returns:
        targets: same shape as `rewards`.
    """
    gamma = _checks.in_unit_interval("td_target", "gamma", gamma)
    _checks.same_shape("td_target", rewards=rewards, next_values=next_values, terminated=terminated)
    cut = _checks.as_float("td_target", "terminated", terminated, rewards).bool()
    return _td_target(rewards, next_values, cut, gamma)


def _td_target(rewards, next_values, cut, gamma: float):
    """`td_target` without its entry checks: for loops that checked their inputs once, at their own boundary.

    cut: a bool tensor of `rewards`' shape (True where s_{t+1} is terminal); gamma: a float in [0, 1].
    """
    if gamma == 0.0:
        cut = torch.ones_like(cut)  # nothing of the next value counts
    bootstrap = torch.where(cut, torch.zeros_like(next_values), next_values)
    return rewards + gamma * bootstrap


def discounted_returns(rewards, gamma, terminated=None, last_value=0.0):
    """Discounted return ``G_t = r_t + gamma * (1 - terminated_t) * G_{t+1}``, with ``G_T = last_value``.

    Introduced in ``00_notation``. Intuition: the return is the TD target whose "next value" is the
    next return itself, so the sum runs backwards from the end of the rollout. Rewards after a
    termination belong to the next episode and are not added.

    Args:
        rewards: (T,) or (T, N); r_t.
        gamma: discount in [0, 1].
        terminated: optional, same shape as `rewards`, bool or float; 1 where the episode ended at step t.
        last_value: float, or tensor (N,) (anything that broadcasts to one step of `rewards`);
            the bootstrap G_T, e.g. V(s_T) when the rollout stops in the middle of an episode.

    Numerical safety: each step is `td_target`'s formula, so a NaN or inf return (or `last_value`)
    beyond a termination is cut, not multiplied by 0.

    Returns:
        returns: same shape as `rewards`.
    """
    gamma = _checks.in_unit_interval("discounted_returns", "gamma", gamma)
    if rewards.dim() == 0 or rewards.shape[0] == 0:
        raise ValueError(
            f"discounted_returns: rewards must be (T,) or (T, N) with T >= 1, got {_checks.shape_str(rewards)}"
        )
    if terminated is None:
        terminated = torch.zeros_like(rewards)
    _checks.same_shape("discounted_returns", rewards=rewards, terminated=terminated)
    terminated = _checks.as_float("discounted_returns", "terminated", terminated, rewards).bool()  # checked once
    last_value = torch.as_tensor(last_value, dtype=rewards.dtype, device=rewards.device)
    _checks.broadcasts_to("discounted_returns", "last_value", last_value, "one step of rewards", rewards[0])

    # Checked once above; the loop below is the bare recursion (no per-step checks: benchmarks/bench_validation.py).
    cut = terminated if gamma > 0.0 else torch.ones_like(terminated)  # gamma = 0: nothing of the next return counts
    G = last_value.expand(rewards.shape[1:])  # G_T, shape of one step: () or (N,)
    zero = torch.zeros_like(rewards[0])
    returns = []
    for t in reversed(range(rewards.shape[0])):
        G = rewards[t] + gamma * torch.where(cut[t], zero, G)  # `td_target` with the next return as the next value
        returns.append(G)
    return torch.stack(returns[::-1])  # T x (N,) -> (T, N)


def gae(rewards, values, next_values, terminated, truncated, gamma, lam):
    """Generalized advantage estimation (Schulman et al. 2016), with termination and truncation kept apart.

    Introduced in ``03_actor_critic``. Intuition: the TD error ``delta_t`` is a one-step, low-variance
    but biased advantage; summing the following TD errors with weights ``(gamma * lam)^k`` trades bias
    for variance: lam=0 is the TD error; lam=1 sums every real reward up to the end of the rollout
    and bootstraps from ``next_values`` there, minus V(s_t). That is the Monte Carlo return minus V
    only when the episode ends inside the rollout; with A2C's 5-step rollouts it is an n-step
    advantage, n <= 5.

        delta_t = r_t + gamma * (1 - terminated_t) * next_values_t - values_t
        A_t     = delta_t + gamma * lam * (1 - (terminated_t | truncated_t)) * A_{t+1},   A_T = 0

    Call it under ``torch.no_grad()``: advantages and returns are targets, not things to differentiate.

    Args:
        rewards: (T,) or (T, N); r_t.
        values: same shape; V(s_t).
        next_values: same shape; V(s_{t+1}) of the TRUE next state: at a truncation, the value of the
            final observation (gymnasium's ``info["final_obs"]``), not of the reset observation.
        terminated: same shape, bool or float; cuts the bootstrap and the recursion.
        truncated: same shape, bool or float; cuts only the recursion (the next episode is unrelated).
        gamma: discount in [0, 1].
        lam: GAE lambda in [0, 1].

    Numerical safety: the bootstrap and the recursion are cut by selection, not by a product with 0, so
    a NaN or inf value or reward beyond the end of an episode (or with gamma * lam = 0) does not leak.

    Returns:
        (advantages, returns): both of `rewards`' shape; ``returns = advantages + values`` is the
        critic's regression target (the lambda-return).
    """
    gamma = _checks.in_unit_interval("gae", "gamma", gamma)
    lam = _checks.in_unit_interval("gae", "lam", lam)
    _checks.same_shape(
        "gae", rewards=rewards, values=values, next_values=next_values, terminated=terminated, truncated=truncated
    )
    if rewards.dim() == 0:
        raise ValueError("gae: rewards must be (T,) or (T, N), got ()")
    terminated = _checks.as_float("gae", "terminated", terminated, rewards).bool()
    truncated = _checks.as_float("gae", "truncated", truncated, rewards).bool()
    episode_ended = terminated | truncated

    deltas = td_target(rewards, next_values, terminated, gamma) - values  # (T, N): the TD errors
    decay = gamma * lam
    cut = episode_ended if decay > 0.0 else torch.ones_like(episode_ended)  # decay = 0: A_t is the TD error alone
    zero = torch.zeros_like(deltas[0])
    advantages = []
    A = zero  # A_T = 0: nothing is known beyond the rollout except next_values
    for t in reversed(range(rewards.shape[0])):
        A = deltas[t] + decay * torch.where(cut[t], zero, A)  # A_{t+1} of another episode: dropped
        advantages.append(A)
    advantages = torch.stack(advantages[::-1])  # T x (N,) -> (T, N)
    return advantages, advantages + values


def normalize(x, eps=1e-8):
    """``(x - mean) / (std + eps)`` over all elements, with the unbiased std (``torch.std``'s default).

    Introduced in ``02_policy_gradient`` (REINFORCE's weights) and ``03_actor_critic``. The two parts
    do different things. Centring subtracts the batch mean, a baseline shared by the whole batch: it
    can flip signs on purpose, so that an action whose advantage is positive but below the batch's
    average is pushed down (the widget of notebook 03 shows such a step). Dividing by the std
    multiplies the whole batch's update by one positive number: the direction stays, the step size
    no longer depends on the scale of the rewards. (The batch mean depends on the sample itself, so
    as a baseline it adds a bias of order 1/batch size; practice accepts it.) ``eps`` keeps a
    constant batch from dividing by zero.

    Numerical safety: a constant batch gives exactly 0. Its float mean can be off by an ulp, and that
    residue divided by a std of the same size would be about +-0.7 everywhere; so a std at rounding
    level (`no_spread`: <= 16 eps * max|x|) counts as no spread at all. Other batches are unchanged.

    Precision: a bf16 or fp16 `x` is normalized in float32 (and returned in float32), as TRL computes
    its reward statistics; float32 and float64 are unchanged.

    Args:
        x: any shape with at least 2 elements, no NaN (one NaN would make every entry NaN: ValueError).
        eps: > 0.

    Returns:
        same shape as `x`.
    """
    eps = _checks.positive("normalize", "eps", eps)
    if x.numel() < 2:
        raise ValueError(
            f"normalize: x needs at least 2 elements for an unbiased std, got shape {_checks.shape_str(x)}"
        )
    x = _checks.at_least_float32(x)
    nans = int(torch.isnan(x).sum())
    if nans:
        raise ValueError(f"normalize: x holds {nans} NaN of {x.numel()} entries (a NaN reward or value upstream);"
                         " the mean and std would make every entry NaN")
    centred = x - x.mean()
    std = x.std()
    return torch.where(no_spread(std, x), torch.zeros_like(centred), centred / (std + eps))


def group_relative(rewards, eps=1e-4, scale=True, leave_one_out=False):
    """Group-relative advantages (GRPO, Dr. GRPO, RLOO): each completion against its own group.

    Introduced in ``07_grpo``. Intuition: G completions are sampled for the same prompt; instead of a
    learned critic, the baseline is how the other completions of that prompt did. A group where all
    rewards are equal teaches nothing: its advantages are exactly 0.

        baseline_i = mean of the group                     (GRPO, Dr. GRPO)
                   = mean of the other G - 1 members       (leave_one_out=True, RLOO)
        A_i = r_i - baseline_i,  then / (std of the group + eps) if scale (TRL's GRPOTrainer)

    ``scale=False`` is Dr. GRPO (Liu et al. 2025), which drops the std division because it
    over-weights groups that are nearly all right or all wrong. The std is the unbiased one, as in
    TRL's GRPOTrainer (``nanstd(rewards.view(-1, G), dim=1)``, Bessel-corrected), where advantages
    are then ``(r - mean) / (std + 1e-4)``. TRL's ``scale_rewards`` is a string there: ``"group"`` is
    ``scale=True``, ``"none"`` is ``scale=False``; ``"batch"`` (one std over the whole batch) has no
    counterpart here.

    Numerical safety: a group whose rewards are equal up to rounding (its std at most 16 eps * max|r|,
    see `no_spread`) gets exactly 0, in every mode, instead of its mean's rounding residue (divided by
    a tiny std when `scale`). Other groups are unchanged.

    Unscorable answers: a NaN reward (a reward function that could not score the answer) is left out of
    its group's mean and std, and its own advantage is 0, as in huggingface/trl@v1.16.0,
    trl/trainer/grpo_trainer.py, ``_generate_and_score_completions`` (nanmean, nanstd, then
    ``nan_to_num(advantages, nan=0.0)``): ``[nan, 1, 0, 1]`` gives ``[0, 0.577, -1.155, 0.577]``. With
    leave_one_out the baseline is the mean of the other SCORED members. A group with fewer than two scored
    answers has no spread: all its advantages are 0. Without NaN the computation is the one above.

    Precision: bf16 or fp16 rewards are handled in float32 (and the advantages returned in float32).

    Args:
        rewards: (..., G); groups on the last dim, e.g. (B, G) for B prompts; NaN marks an unscorable answer.
        eps: > 0, added to the std.
        scale: divide by the group's std.
        leave_one_out: use the mean of the others as the baseline.

    Returns:
        advantages: same shape as `rewards`.
    """
    eps = _checks.positive("group_relative", "eps", eps)
    if rewards.dim() == 0 or rewards.shape[-1] < 2:
        raise ValueError(
            f"group_relative: groups on the last dim need G >= 2 members, got rewards {_checks.shape_str(rewards)}"
        )
    # Checked against huggingface/trl@v1.16.0 (pinned in constraints.txt), trl/trainer/grpo_trainer.py,
    # GRPOTrainer._generate_and_score_completions: advantages = rewards - group mean, then / (std + 1e-4) unless
    # scale_rewards == "none"; std = nanstd(rewards.view(-1, G), dim=1) (trl/trainer/utils.py, Bessel-corrected,
    # as torch.std). scale_rewards is a string in 1.16 ("group", "batch", "none"); older releases took a bool.
    rewards = _checks.at_least_float32(rewards)
    if bool(torch.isnan(rewards).any()):
        return _group_relative_with_unscored(rewards, eps, scale, leave_one_out)
    G = rewards.shape[-1]
    total = rewards.sum(dim=-1, keepdim=True)  # (..., 1)
    if leave_one_out:
        baseline = (total - rewards) / (G - 1)  # (..., G): mean of the other G - 1
    else:
        baseline = total / G  # (..., 1): group mean
    advantages = rewards - baseline
    std = rewards.std(dim=-1, keepdim=True)  # (..., 1)
    if scale:
        advantages = advantages / (std + eps)
    return torch.where(no_spread(std, rewards, dim=-1), torch.zeros_like(advantages), advantages)


def _group_relative_with_unscored(rewards, eps: float, scale: bool, leave_one_out: bool):
    """`group_relative` when some rewards are NaN: NaN answers left out of their group's statistics, advantage 0.

    rewards: (..., G) with NaN entries; the checks were done by the caller.
    """
    scored = ~torch.isnan(rewards)  # (..., G)
    n = scored.sum(dim=-1, keepdim=True).to(rewards.dtype)  # (..., 1) scored answers a group
    r = torch.where(scored, rewards, torch.zeros_like(rewards))  # (..., G), 0 where unscored
    total = r.sum(dim=-1, keepdim=True)  # (..., 1)
    mean = total / n  # (..., 1); NaN for a group with no scored answer (masked below)
    baseline = (total - r) / (n - 1) if leave_one_out else mean  # mean of the other scored members, or the mean
    advantages = r - baseline
    squares = torch.where(scored, (r - mean) ** 2, torch.zeros_like(r))
    std = (squares.sum(dim=-1, keepdim=True) / (n - 1)).sqrt()  # (..., 1) unbiased, over the scored answers
    if scale:
        advantages = advantages / (std + eps)
    flat = (n < 2) | no_spread(std, r, dim=-1)  # (..., 1): nothing to compare within the group
    return torch.where(scored & ~flat, advantages, torch.zeros_like(advantages))
