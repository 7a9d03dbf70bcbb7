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
before comparing: estimated from the samples in `bias_variance`, exactly (`state_offsets`) in the
trajectory panel.

Normalization (`advantages.normalize`) is drawn beside the raw advantages: centring can flip a sign
(a step whose raw advantage is positive but below the episode's mean becomes negative), dividing by
the std only rescales; `trajectory_advantages` marks the flipped steps.
"""

from __future__ import annotations

import functools
import io

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.figure import Figure

from rlnotes.advantages import gae, normalize
from rlnotes.algos import tabular
from rlnotes.envs import gridworld
from rlnotes.exact.policy_gradient import sample_episodes

__all__ = ["world", "critic_values", "state_offsets", "trajectory_advantages", "bias_variance", "view"]

MAX_STEPS = 200  # episodes still running then are truncated (and bootstrapped from the critic)
# The episode the widget shows first. Chosen so that its first setting shows what notebook 03's text
# describes: exactly one step (step 7) whose positive raw advantage (+0.11) normalizes to just below 0.
# (It was 0 until episodes were drawn by `nets.sample_categorical`, which draws a different stream.)
TRAJECTORY_SEED = 2177


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


def state_offsets(gamma: float, lam: float, critic_error: float = 0.0, seed: int = 0) -> torch.Tensor:
    """o(s) = sum_a pi(a|s) E[A_hat_t | s_t = s, a_t = a], exactly, shape (S,): GAE's offset per state.

    The true advantage averages to 0 over the policy's actions, so o(s) is the part of GAE's error
    that every action of s shares, which a baseline would not notice. By linearity of GAE, with
    dbar(s, a) = E[delta_t | s, a] = Q_hat(s, a) - V_hat(s) (Q_hat: one real step, then V_hat):
        E[A_hat | s, a] = dbar(s, a) + gamma lam sum_s' P(s'|s, a) [s' not terminal] o(s'),
        o = (I - gamma lam P_pi)^-1 dbar_pi    (P_pi restricted to non-terminal next states).
    lam = 1 gives o = V_pi - V_hat: the critic's own error, with the sign flipped. (Episodes cut at
    MAX_STEPS are ignored: the random policy almost never lasts that long.)
    """
    mdp, policy = world()
    _, v_hat, _ = critic_values(gamma, critic_error, seed)
    dbar = tabular.q_from_v(mdp, v_hat, gamma) - v_hat.unsqueeze(-1)  # (S, A): E[delta | s, a]
    dbar[mdp.terminal] = 0.0  # no step is taken from a terminal state
    P_pi = torch.einsum("sa,sat->st", policy, mdp.P) * (~mdp.terminal).to(torch.float64)  # (S, S): no sum past the end
    P_pi[mdp.terminal] = 0.0
    eye = torch.eye(mdp.n_states, dtype=torch.float64)
    return torch.linalg.solve(eye - gamma * lam * P_pi, (policy * dbar).sum(-1))  # (S,)


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


def trajectory_advantages(gamma: float = 0.99, lam: float = 0.95, critic_error: float = 0.5,
                          seed: int = TRAJECTORY_SEED) -> dict:
    """One episode of the random policy: its raw GAE advantages, their normalized version, the true ones.

    Returns a dict of 1-d tensors over the episode's T steps: rewards, values (the critic's V_hat(s_t)),
    raw (GAE at gamma, lam), offset (`state_offsets` at s_t), centred (raw - offset: what is compared
    with the truth), true (A(s_t, a_t)), normalized (`advantages.normalize(raw)`: mean 0, std 1) and
    flipped (bool: normalization changed the sign of raw).
    """
    ep = _episodes(1, seed)
    _, v_hat, a_true = critic_values(gamma, critic_error)
    advantages, alive = _gae_of_episodes(ep, v_hat, gamma, lam)
    keep = alive[:, 0]
    raw = advantages[keep, 0]
    states, actions = ep["states"][0, keep], ep["actions"][0, keep]
    offset = state_offsets(gamma, lam, critic_error)[states]
    normalized = normalize(raw) if len(raw) > 1 else raw - raw
    return {
        "rewards": ep["rewards"][0, keep], "values": v_hat[states], "raw": raw, "offset": offset,
        "centred": raw - offset, "true": a_true[states, actions], "normalized": normalized,
        "flipped": (raw > 0) != (normalized > 0),
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
    as64 = lambda xs: torch.tensor(xs, dtype=torch.float64)  # noqa: E731
    return {"lams": lams, "bias2": as64(bias2), "variance": as64(variance)}


def view():
    """Sliders for gamma, lambda and the critic's error; three panels: the trajectory's GAE advantages
    with the offset of each state removed beside the true ones (and the raw GAE), the normalized ones
    (sign flips in red), and bias^2 and variance against lambda.

    Returns the widget box; `box.figure` is the matplotlib figure it redraws (tests read it).
    """
    gamma = widgets.FloatSlider(value=0.99, min=0.5, max=1.0, step=0.01, description="gamma")
    lam = widgets.FloatSlider(value=0.95, min=0.0, max=1.0, step=0.05, description="lambda")
    error = widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.1, description="critic error")
    image = widgets.Image(format="png")  # not an Output widget: nbclient can hang on those (jupyter/nbclient#312)
    fig = Figure(figsize=(12, 3.4))  # not a pyplot figure: shown only inside the widget, never twice
    ax_raw, ax_norm, ax_bv = fig.subplots(1, 3)
    fig.subplots_adjust(wspace=0.35, bottom=0.16, left=0.06, right=0.98)

    def redraw(_=None):
        traj = trajectory_advantages(gamma.value, lam.value, error.value)
        curves = bias_variance(gamma.value, error.value)
        t = np.arange(len(traj["raw"]))
        ax_raw.clear()
        ax_raw.bar(t, traj["centred"].numpy(), color="tab:blue", label="GAE - offset of its state")
        ax_raw.plot(t, traj["true"].numpy(), "k.", ms=9, label="true A(s, a)")
        ax_raw.plot(t, traj["raw"].numpy(), "_", color="tab:red", ms=12, mew=2, label="raw GAE")
        ax_raw.axhline(0, color="0.5", lw=0.5)
        ax_raw.set(xlabel="step t", ylabel="advantage",
                   title=f"raw GAE: mean {traj['raw'].mean():+.3f}, std {traj['raw'].std():.3f}")
        ax_raw.legend(fontsize=8)
        ax_norm.clear()
        colors = np.where(traj["flipped"].numpy(), "tab:red", "tab:orange")
        ax_norm.bar(t, traj["normalized"].numpy(), color=colors)
        flipped = traj["flipped"].numpy()
        ax_norm.plot(t[flipped], np.zeros(flipped.sum()), "v", color="tab:red", ms=9, label="sign changed by centring")
        ax_norm.axhline(0, color="0.5", lw=0.5)
        ax_norm.legend(fontsize=8)
        ax_norm.set(xlabel="step t", ylabel="normalized advantage",
                    title=f"normalized: mean 0, std 1; {int(traj['flipped'].sum())} sign(s) flipped (red)")
        ax_bv.clear()
        ax_bv.plot(curves["lams"].numpy(), curves["bias2"].numpy(), "o-", label="bias$^2$")
        ax_bv.plot(curves["lams"].numpy(), curves["variance"].numpy(), "s-", label="variance")
        ax_bv.axvline(lam.value, color="0.4", ls="--", lw=1)
        ax_bv.set(xlabel="lambda", ylabel="bias$^2$, variance (visit-weighted mean)", yscale="log",
                  title=f"GAE error vs the true advantage (gamma {gamma.value:.2f})")
        ax_bv.legend(fontsize=8)
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=80)
        image.value = png.getvalue()

    for slider in (gamma, lam, error):
        slider.observe(redraw, names="value")
    redraw()
    box = widgets.VBox([widgets.HBox([gamma, lam, error]), image])
    box.figure = fig
    return box
