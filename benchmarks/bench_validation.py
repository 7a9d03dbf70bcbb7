"""What input checks cost in the course's hot loops, and which categorical sampler is the fastest.

    .venv/bin/python benchmarks/bench_validation.py            # about half a minute on one core

The validation policy (ARCHITECTURE.md): a public function checks its inputs once, at its boundary,
and never inside a loop. This script prints, side by side, each loop as the package runs it and the
same loop with no checks at all, so that the overhead of the checks is a measured number:

* `advantages.discounted_returns` at T=500, N=8: before (each step called the checked `td_target`,
  re-checking its inputs 500 times), now (checked once), and the bare loop. Target: now <= 1.3x bare.
* `advantages.gae` at T=500, N=8: the same comparison.
* the tabular TD loops of chapter 01: one update through the public, checked `q_learning_update`
  against the unchecked core the loops now call.
* the trainers call the public losses once per minibatch: what their checks cost beside one PPO
  minibatch step (forward, backward, Adam) of the course's 64x64 networks.
* the four categorical samplers the course had (Gumbel-max, inverse CDF, torch.multinomial and numpy's
  searchsorted), on the rollout's shape (8 envs x 2 actions) and on a tabular batch (8000 x 4).

Timings are the minimum over repeats (the least disturbed run) with one torch thread; they vary with
the CPU and its load, the ratios much less.
"""

from __future__ import annotations

import timeit

import numpy as np
import torch

from rlnotes import _checks
from rlnotes.advantages import discounted_returns, gae, normalize, td_target
from rlnotes.algos import tabular
from rlnotes.nets import CategoricalPolicy, ValueNetwork, sample_categorical
from rlnotes.objectives import clipped_surrogate, value_loss

torch.set_num_threads(1)


def best(fn, number: int, repeat: int = 7) -> float:
    """Seconds per call: the minimum over `repeat` runs of `number` calls."""
    fn()  # warm up
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


# ---- discounted_returns and gae: checked at the boundary vs bare loops ----------------------------


def returns_before(rewards, gamma, terminated):
    """discounted_returns as it was: the boundary checks, then the checked `td_target` at every step."""
    gamma = _checks.in_unit_interval("discounted_returns", "gamma", gamma)
    _checks.same_shape("discounted_returns", rewards=rewards, terminated=terminated)
    terminated = _checks.as_float("discounted_returns", "terminated", terminated, rewards).bool()
    G = torch.zeros(rewards.shape[1:], dtype=rewards.dtype)
    out = []
    for t in reversed(range(rewards.shape[0])):
        G = td_target(rewards[t], G, terminated[t], gamma)
        out.append(G)
    return torch.stack(out[::-1])


def returns_bare(rewards, gamma, terminated):
    """The same recursion with no check at all (terminated already bool)."""
    G = torch.zeros(rewards.shape[1:], dtype=rewards.dtype)
    zero = torch.zeros_like(rewards[0])
    out = []
    for t in reversed(range(rewards.shape[0])):
        G = rewards[t] + gamma * torch.where(terminated[t], zero, G)
        out.append(G)
    return torch.stack(out[::-1])


def gae_bare(rewards, values, next_values, terminated, truncated, gamma, lam):
    """The GAE recursion with no check at all (flags already bool)."""
    deltas = rewards + gamma * torch.where(terminated, torch.zeros_like(next_values), next_values) - values
    ended, decay = terminated | truncated, gamma * lam
    zero = torch.zeros_like(deltas[0])
    A, out = zero, []
    for t in reversed(range(rewards.shape[0])):
        A = deltas[t] + decay * torch.where(ended[t], zero, A)
        out.append(A)
    advantages = torch.stack(out[::-1])
    return advantages, advantages + values


def bench_recursions(T: int = 500, N: int = 8) -> list[tuple[str, float, float]]:
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(T, N, generator=g)
    values, next_values = torch.randn(T, N, generator=g), torch.randn(T, N, generator=g)
    terminated = torch.rand(T, N, generator=g) < 0.02
    truncated = (torch.rand(T, N, generator=g) < 0.01) & ~terminated
    reference = returns_bare(rewards, 0.99, terminated)
    assert torch.equal(discounted_returns(rewards, 0.99, terminated), reference)
    assert torch.equal(returns_before(rewards, 0.99, terminated), reference)
    before = best(lambda: returns_before(rewards, 0.99, terminated), 20)
    now = best(lambda: discounted_returns(rewards, 0.99, terminated), 20)
    bare = best(lambda: returns_bare(rewards, 0.99, terminated), 20)
    gae_now = best(lambda: gae(rewards, values, next_values, terminated, truncated, 0.99, 0.95), 20)
    gae_ref = best(lambda: gae_bare(rewards, values, next_values, terminated, truncated, 0.99, 0.95), 20)
    return [
        (f"discounted_returns T={T} N={N}, before (td_target each step)", before, bare),
        (f"discounted_returns T={T} N={N}, now (checked once)", now, bare),
        (f"gae T={T} N={N}, now (checked once)", gae_now, gae_ref),
    ]


# ---- the tabular TD update: public (checked) vs the core the loops call ---------------------------


def bench_tabular() -> list[tuple[str, float, float]]:
    q = torch.zeros(16, 4, dtype=torch.float64)
    public = best(lambda: tabular.q_learning_update(q, 3, 1, -1.0, 4, False, 0.1, 0.9), 2000)
    core = best(lambda: tabular._q_update(q, 3, 1, -1.0, q[4].max(), False, 0.1, 0.9), 2000)
    return [("q_learning_update, one TD step: public (checked) vs the loops' core", public, core)]


# ---- per-minibatch checks in the trainers ---------------------------------------------------------


def bench_minibatch(B: int = 256) -> list[tuple[str, float, float]]:
    g = torch.Generator().manual_seed(0)
    policy, value_net = CategoricalPolicy(4, 2), ValueNetwork(4)
    params = list(policy.parameters()) + list(value_net.parameters())
    optimizer = torch.optim.Adam(params, lr=1e-3, eps=1e-5, fused=True)
    obs, actions = torch.randn(B, 4, generator=g), torch.randint(2, (B,), generator=g)
    old_logp, advantages, returns = torch.randn(B, generator=g) - 1, torch.randn(B, generator=g), torch.randn(B, generator=g)

    def step(loss_fn, value_fn, norm_fn):
        dist = policy(obs)
        loss = loss_fn(dist.log_prob(actions), old_logp, norm_fn(advantages)).mean() + 0.5 * value_fn(value_net(obs), returns)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def bare_clip(logp, old, adv):
        ratio = torch.exp((logp - old.detach()).clamp(max=20.0))
        return -torch.min(ratio * adv, torch.clamp(ratio, 0.8, 1.2) * adv)

    def bare_norm(x):
        return (x - x.mean()) / (x.std() + 1e-8)

    checked = best(lambda: step(clipped_surrogate, value_loss, normalize), 300)
    bare = best(lambda: step(bare_clip, lambda v, r: 0.5 * ((v - r) ** 2).mean(), bare_norm), 300)
    return [(f"PPO minibatch step B={B}: public losses (checked) vs bare formulas", checked, bare)]


# ---- the four categorical samplers ------------------------------------------------------------------


def inverse_cdf(probs, generator=None):
    """reinforce._sample_rows as it was (chapter 02's tabular episodes)."""
    u = torch.rand(probs.shape[0], 1, generator=generator, dtype=probs.dtype)
    return (u > probs.cumsum(-1)).sum(-1).clamp(max=probs.shape[-1] - 1)


def multinomial(probs, generator=None):
    """tabular.sample_returns as it was."""
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def numpy_searchsorted(cumulative, rng):
    """tabular.td0_evaluation as it was: one row at a time."""
    return np.array([min(int(np.searchsorted(row, rng.random(), side="right")), len(row) - 1) for row in cumulative])


def bench_samplers() -> list[tuple[str, float, float]]:
    rows = []
    for n, K, number in ((8, 2, 2000), (8000, 4, 50)):
        g = torch.Generator().manual_seed(0)
        logits = torch.randn(n, K, dtype=torch.float64, generator=g)
        probs = torch.softmax(logits, -1)
        gumbel = best(lambda: sample_categorical(logits, g), number)
        rows.append((f"sampler n={n} K={K}: Gumbel-max (nets.sample_categorical)", gumbel, gumbel))
        rows.append((f"sampler n={n} K={K}: softmax + inverse CDF", best(lambda: inverse_cdf(torch.softmax(logits, -1), g),
                                                                         number), gumbel))
        rows.append((f"sampler n={n} K={K}: inverse CDF on probabilities", best(lambda: inverse_cdf(probs, g), number), gumbel))
        rows.append((f"sampler n={n} K={K}: torch.multinomial", best(lambda: multinomial(probs, g), number), gumbel))
        if n <= 8:
            rng, cumulative = np.random.default_rng(0), probs.cumsum(-1).numpy()
            rows.append((f"sampler n={n} K={K}: numpy searchsorted, row by row",
                         best(lambda: numpy_searchsorted(cumulative, rng), number), gumbel))
    return rows


def main() -> None:
    print(f"torch {torch.__version__}, 1 thread; times are the best of 7 repeats\n")
    print(f"{'what':<72} {'time':>10} {'reference':>10} {'ratio':>6}")
    for name, t, ref in bench_recursions() + bench_tabular() + bench_minibatch() + bench_samplers():
        print(f"{name:<72} {t * 1e3:>8.3f}ms {ref * 1e3:>8.3f}ms {t / ref:>6.2f}")
    print("\nreference: the same loop or step with no checks at all (for the samplers: Gumbel-max)")


if __name__ == "__main__":
    main()
