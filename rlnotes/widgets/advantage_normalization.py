"""Chapter 03 widget: one trajectory's GAE advantages before and after normalization, and GAE's
bias-variance trade-off as lambda moves, measured on the gridworld where the true advantages are known.

The world is chapter 00's 4x3 gridworld, played by the uniformly random policy. Its exact V_pi and
Q_pi (by `tabular.policy_evaluation`) give the true advantage A(s, a) = Q_pi(s, a) - V_pi(s). The
critic that GAE uses is V_pi plus a fixed error per state, of size `critic_error`: a learned critic is
never exact, and how much that matters is what lambda decides.

    lambda = 0: A_hat = delta_t = r_t + gamma V_hat(s_{t+1}) - V_hat(s_t)   one reward, the rest guessed
    lambda = 1: A_hat = U_t - V_hat(s_t)                                      all rewards, nothing guessed

Bias here is the part of the error that depends on the action: a per-state offset of A_hat (which
V_hat(s_t) itself adds) does not change the policy gradient, as a baseline does not, so it is removed
before comparing (`bias_variance`).
"""

from __future__ import annotations

import functools
import io

import ipywidgets as widgets
import numpy as np
import torch
from IPython.display import Image, display
from matplotlib.figure import Figure

from rlnotes.advantages import gae, normalize
from rlnotes.algos import tabular
from rlnotes.algos.reinforce import sample_episodes
from rlnotes.envs import gridworld

__all__ = ["world", "critic_values", "trajectory_advantages", "bias_variance", "view"]

MAX_STEPS = 200  # episodes still running then are truncated (and bootstrapped from the critic)


@functools.lru_cache(maxsize=None)
def world():
    """(mdp, policy): the AIMA 4x3 gridworld and the uniformly random policy (S, A)."""
    mdp = gridworld()
    return mdp, tabular.uniform_policy(mdp)


def critic_values(gamma: float, critic_error: float = 0.0, seed: int = 0):
    """(v_true (S,), v_hat (S,), a_true (S, A)): exact V_pi and A_pi, and a critic off by `critic_error`.

    v_hat = v_true + critic_error * z(s), with z a fixed standard normal draw per state (from `seed`);
    terminal states keep the value 0 (there is nothing to guess there).
    """
    if critic_error < 0:
        raise ValueError(f"critic_values: critic_error must be >= 0, got {critic_error}")
    mdp, policy = world()
    v = tabular.policy_evaluation(mdp, policy, gamma)
    a = tabular.q_from_v(mdp, v, gamma) - v.unsqueeze(-1)  # (S, A)
    z = torch.randn(mdp.n_states, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    v_hat = torch.where(mdp.terminal, torch.zeros_like(v), v + critic_error * z)
    return v, v_hat, a


@functools.lru_cache(maxsize=8)
def _episodes(n: int, seed: int) -> dict:
    mdp, policy = world()
    return sample_episodes(mdp, policy, n, torch.Generator().manual_seed(seed), max_steps=MAX_STEPS)


def _gae_of_episodes(ep: dict, v_hat: torch.Tensor, gamma: float, lam: float):
    """GAE over sampled episodes (n, T), time first as `advantages.gae` wants; returns (advantages, alive), (T, n)."""
    alive, terminated = ep["alive"].T, ep["terminated"].T  # (n, T) -> (T, n)
    truncated = torch.zeros_like(terminated)
    truncated[-1] = alive[-1] & ~terminated[-1]  # still running at MAX_STEPS: cut, and bootstrapped from V_hat
    advantages, _ = gae(ep["rewards"].T, v_hat[ep["states"].T], v_hat[ep["next_states"].T], terminated, truncated, gamma, lam)
    return advantages, alive


def trajectory_advantages(gamma: float = 0.99, lam: float = 0.95, critic_error: float = 0.5, seed: int = 0) -> dict:
    """One episode of the random policy: its raw GAE advantages, their normalized version, the true ones.

    Returns a dict of 1-d tensors over the episode's T steps: rewards, values (the critic's V_hat(s_t)),
    raw (GAE at gamma, lam), normalized (`advantages.normalize(raw)`: mean 0, std 1), true (A(s_t, a_t)).
    """
    ep = _episodes(1, seed)
    _, v_hat, a_true = critic_values(gamma, critic_error)
    advantages, alive = _gae_of_episodes(ep, v_hat, gamma, lam)
    keep = alive[:, 0]
    raw = advantages[keep, 0]
    states, actions = ep["states"][0, keep], ep["actions"][0, keep]
    return {
        "rewards": ep["rewards"][0, keep], "values": v_hat[states], "raw": raw,
        "normalized": normalize(raw) if len(raw) > 1 else raw - raw, "true": a_true[states, actions],
    }


def bias_variance(gamma: float = 0.99, critic_error: float = 0.5, lams=None, n_episodes: int = 1000, seed: int = 1) -> dict:
    """Squared bias and variance of GAE's A_hat against the true A(s, a), for each lambda in `lams`.

    Over all steps of `n_episodes` episodes: group the estimates by (s, a); m(s, a) is their mean.
    Removing the policy-weighted mean over actions (an offset per state does not bias the policy
    gradient) leaves the part that does:  bias(s, a) = m(s, a) - sum_a' pi(a'|s) m(s, a') - A(s, a).
        bias2    = visit-weighted mean of bias(s, a)^2
        variance = visit-weighted mean of the variance of A_hat within each (s, a)
    Returns {"lams", "bias2", "variance"} as float64 tensors.
    """
    lams = torch.linspace(0.0, 1.0, 11, dtype=torch.float64) if lams is None else torch.as_tensor(lams, dtype=torch.float64)
    if n_episodes < 2:
        raise ValueError(f"bias_variance: n_episodes must be >= 2, got {n_episodes}")
    mdp, policy = world()
    S, A = mdp.n_states, mdp.n_actions
    _, v_hat, a_true = critic_values(gamma, critic_error)
    ep = _episodes(n_episodes, seed)
    bias2, variance = [], []
    for lam in lams.tolist():
        advantages, alive = _gae_of_episodes(ep, v_hat, gamma, lam)
        index = (ep["states"].T * A + ep["actions"].T)[alive]  # (K,) flat (s, a) of every real step
        est = advantages[alive]
        counts = torch.zeros(S * A, dtype=torch.float64).index_add_(0, index, torch.ones_like(est))
        sums = torch.zeros(S * A, dtype=torch.float64).index_add_(0, index, est)
        squares = torch.zeros(S * A, dtype=torch.float64).index_add_(0, index, est**2)
        seen = counts > 1
        mean = torch.where(seen, sums / counts.clamp(min=1), torch.zeros_like(sums)).reshape(S, A)
        var = torch.where(seen, (squares - counts * mean.reshape(-1) ** 2) / (counts - 1).clamp(min=1), torch.zeros_like(sums))
        centred = mean - (policy * mean).sum(-1, keepdim=True)  # remove the per-state offset
        b = (centred - a_true).reshape(-1)
        weights = torch.where(seen, counts, torch.zeros_like(counts))
        weights = weights / weights.sum()
        bias2.append(float((weights * b**2).sum()))
        variance.append(float((weights * var).sum()))
    return {"lams": lams, "bias2": torch.tensor(bias2, dtype=torch.float64), "variance": torch.tensor(variance, dtype=torch.float64)}


def view():
    """Sliders for gamma, lambda and the critic's error; three panels: the trajectory's raw and true
    advantages, the normalized ones, and bias^2 and variance against lambda.

    Returns the widget box; `box.figure` is the matplotlib figure it redraws (tests read it).
    """
    gamma = widgets.FloatSlider(value=0.99, min=0.5, max=1.0, step=0.01, description="gamma")
    lam = widgets.FloatSlider(value=0.95, min=0.0, max=1.0, step=0.05, description="lambda")
    error = widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.1, description="critic error")
    out = widgets.Output()
    fig = Figure(figsize=(13, 3.6))  # not a pyplot figure: shown only inside the widget, never twice
    ax_raw, ax_norm, ax_bv = fig.subplots(1, 3)
    fig.subplots_adjust(wspace=0.3, bottom=0.16)

    def redraw(_=None):
        traj = trajectory_advantages(gamma.value, lam.value, error.value)
        curves = bias_variance(gamma.value, error.value)
        t = np.arange(len(traj["raw"]))
        ax_raw.clear()
        ax_raw.bar(t, traj["raw"].numpy(), color="tab:blue", label="GAE estimate")
        ax_raw.plot(t, traj["true"].numpy(), "k.", label="true A(s, a)")
        ax_raw.set(xlabel="step t", title=f"raw: mean {traj['raw'].mean():+.3f}, std {traj['raw'].std():.3f}")
        ax_raw.legend(fontsize=8)
        ax_norm.clear()
        ax_norm.bar(t, traj["normalized"].numpy(), color="tab:orange")
        ax_norm.set(xlabel="step t", title="normalized: mean 0, std 1")
        ax_bv.clear()
        ax_bv.plot(curves["lams"].numpy(), curves["bias2"].numpy(), "o-", label="bias$^2$")
        ax_bv.plot(curves["lams"].numpy(), curves["variance"].numpy(), "s-", label="variance")
        ax_bv.axvline(lam.value, color="0.4", ls="--", lw=1)
        ax_bv.set(xlabel="lambda", yscale="log", title=f"GAE error vs the true advantage (gamma {gamma.value:.2f})")
        ax_bv.legend(fontsize=8)
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=80)
        with out:
            out.clear_output(wait=True)
            display(Image(data=png.getvalue()))

    for slider in (gamma, lam, error):
        slider.observe(redraw, names="value")
    redraw()
    box = widgets.VBox([widgets.HBox([gamma, lam, error]), out])
    box.figure = fig
    return box
