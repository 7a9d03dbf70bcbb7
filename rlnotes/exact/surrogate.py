"""Chapter 04's exact lab: the true objective J against TRPO's surrogate L, on an MDP small enough to solve.

Introduced in notebook 04. TRPO maximizes a surrogate L built from the old policy's data instead of the
objective J itself. On a tabular MDP both can be computed exactly (linear solves, no sampling), so a
notebook can draw them along a direction and see in what sense L approximates J:

    J(theta) - J(theta_old) = sum_s eta_theta(s)  sum_a pi_theta(a|s) A_old(s, a)    (exact: the performance
                                                                                    difference lemma)
    L(theta) = J(theta_old) + sum_s eta_old(s) sum_a pi_theta(a|s) A_old(s, a)      (the surrogate)

with eta_pi(s) = sum_t gamma^t P(S_t = s) the discounted visits of pi from the start and A_old = Q_old - V_old.
The only difference is WHICH policy's visits weigh the states: the new one's in J, the old one's in L
(the old policy collected the data; importance sampling corrects only the action, not the state).
Hence L(theta_old) = J(theta_old) and grad L = grad J at theta_old (first order), and TRPO's Theorem 1
bounds the gap:

    J(theta) >= L(theta) - C * max_s KL(pi_old(.|s) || pi_theta(.|s)),   C = 4 eps gamma / (1 - gamma)^2,
    eps = max_{s,a} |A_old(s, a)|.

Sources: Kakade and Langford (2002), "Approximately Optimal Approximate Reinforcement Learning", Lemma
6.1 (the performance difference, there with the normalized (1 - gamma) eta); Schulman et al. (2015),
"Trust Region Policy Optimization", sec. 2 eqs. (1)-(3) (eta, rho_pi, L_pi) and sec. 3, Theorem 1 with
eq. (9) (the bound with D_KL^max). The policy is a tabular softmax, pi(.|s) = softmax(logits[s]), float64;
every function is pure and differentiable in `logits` where that makes sense. The algorithm
(`rlnotes.algos.trpo`) uses none of this.
"""

from __future__ import annotations

import torch

from rlnotes.algos import tabular
from rlnotes.divergences import kl_categorical
from rlnotes.envs import TabularMDP

__all__ = [
    "random_mdp", "discounted_visits", "objective", "advantage", "surrogate", "performance_difference",
    "max_kl", "penalty_coefficient", "curves_along",
]


def random_mdp(n_states: int, n_actions: int, generator: torch.Generator | None = None,
               reward_scale: float = 1.0) -> TabularMDP:
    """A small MDP with random dynamics and rewards and no terminal state; episodes start in state 0.

    P[s, a] ~ Dirichlet(1, ..., 1) (normalized exponential draws), R[s, a, s'] ~ N(0, reward_scale^2).
    Every state can be reached and every policy has a finite value for gamma < 1.
    Returns a `TabularMDP` with P, R (S, A, S) float64.
    """
    if n_states < 1 or n_actions < 1:
        raise ValueError(f"random_mdp: n_states and n_actions must be >= 1, got {n_states}, {n_actions}")
    draws = -torch.rand(n_states, n_actions, n_states, generator=generator, dtype=torch.float64).log()  # Exp(1)
    P = draws / draws.sum(-1, keepdim=True)  # (S, A, S): each row a Dirichlet(1) draw
    R = reward_scale * torch.randn(n_states, n_actions, n_states, generator=generator, dtype=torch.float64)
    return TabularMDP(P, R, torch.zeros(n_states, dtype=torch.bool), start=0)


def _start(mdp: TabularMDP) -> torch.Tensor:
    origin = torch.zeros(mdp.n_states, dtype=torch.float64)
    origin[mdp.start] = 1.0
    return origin  # (S,)


def discounted_visits(mdp: TabularMDP, policy: torch.Tensor, gamma: float) -> torch.Tensor:
    """eta_pi(s) = sum_t gamma^t P(S_t = s | S_0 = mdp.start, pi), shape (S,): TRPO's rho_pi (unnormalized).

    eta = e_start^T (I - gamma P_pi)^-1, by a linear solve; an episode stops at a terminal state (its row of
    P_pi is zeroed: the terminal state is visited once, then nothing). Without terminal states the visits sum
    to 1 / (1 - gamma). policy: (S, A). Differentiable in `policy`.
    """
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"discounted_visits: gamma must be in [0, 1), got {gamma}")
    P_pi = torch.einsum("sa,sat->st", policy.to(torch.float64), mdp.P)  # (S, A) x (S, A, S) -> (S, S)
    P_pi = torch.where(mdp.terminal.unsqueeze(-1), torch.zeros_like(P_pi), P_pi)  # no visits after the end
    system = torch.eye(mdp.n_states, dtype=torch.float64) - gamma * P_pi
    return torch.linalg.solve(system.T, _start(mdp))  # (S,)


def objective(mdp: TabularMDP, logits: torch.Tensor, gamma: float) -> torch.Tensor:
    """J(theta) = V_pi(start) for pi = softmax(logits, -1), exactly (`tabular.policy_evaluation`, a linear solve).

    logits: (S, A). Returns a scalar, differentiable in `logits` (autograd through the solve).
    """
    return tabular.policy_evaluation(mdp, torch.softmax(logits.to(torch.float64), -1), gamma)[mdp.start]


def advantage(mdp: TabularMDP, logits: torch.Tensor, gamma: float) -> torch.Tensor:
    """A_pi(s, a) = Q_pi(s, a) - V_pi(s), shape (S, A), for pi = softmax(logits, -1); 0 in terminal states.

    sum_a pi(a|s) A_pi(s, a) = 0 in every state. Computed without gradient (it is data for the surrogate).
    """
    with torch.no_grad():
        policy = torch.softmax(logits.to(torch.float64), -1)  # (S, A)
        v = tabular.policy_evaluation(mdp, policy, gamma)  # (S,)
        a = tabular.q_from_v(mdp, v, gamma) - v.unsqueeze(-1)  # (S, A)
        return torch.where(mdp.terminal.unsqueeze(-1), torch.zeros_like(a), a)


def surrogate(mdp: TabularMDP, logits: torch.Tensor, logits_old: torch.Tensor, gamma: float) -> torch.Tensor:
    """TRPO's L_old(theta) = J(theta_old) + sum_s eta_old(s) sum_a pi_theta(a|s) A_old(s, a), a scalar.

    Schulman et al. (2015), eq. (3). Its sampled form is the batch's mean of r_t(theta) A_t (states from
    the OLD policy's visits, actions reweighed by r = pi_theta / pi_old). Differentiable in `logits` (S, A);
    everything of theta_old is held fixed.
    """
    with torch.no_grad():
        old = logits_old.to(torch.float64)
        visits_old = discounted_visits(mdp, torch.softmax(old, -1), gamma)  # (S,)
        a_old = advantage(mdp, old, gamma)  # (S, A)
        j_old = objective(mdp, old, gamma)
    policy = torch.softmax(logits.to(torch.float64), -1)  # (S, A)
    return j_old + (visits_old.unsqueeze(-1) * policy * a_old).sum()


def performance_difference(mdp: TabularMDP, logits: torch.Tensor, logits_old: torch.Tensor, gamma: float) -> torch.Tensor:
    """sum_s eta_theta(s) sum_a pi_theta(a|s) A_old(s, a): the NEW policy's visits, the old advantages.

    Kakade and Langford (2002), Lemma 6.1: this equals J(theta) - J(theta_old) exactly. It is L(theta) -
    J(theta_old) with eta_old replaced by eta_theta. A scalar, differentiable in `logits` (S, A).
    """
    a_old = advantage(mdp, logits_old, gamma)  # (S, A), no gradient
    policy = torch.softmax(logits.to(torch.float64), -1)  # (S, A)
    visits = discounted_visits(mdp, policy, gamma)  # (S,)
    return (visits.unsqueeze(-1) * policy * a_old).sum()


def max_kl(mdp: TabularMDP, logits_old: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """D_KL^max = max over non-terminal states s of KL(pi_old(.|s) || pi_theta(.|s)), a scalar.

    Exact per state (`divergences.kl_categorical`); logits_old, logits: (S, A). Terminal states are left
    out: no action is taken there.
    """
    kl = kl_categorical(logits_old.to(torch.float64), logits.to(torch.float64))  # (S, A) -> (S,)
    return kl[~mdp.terminal].max()


def penalty_coefficient(mdp: TabularMDP, logits_old: torch.Tensor, gamma: float) -> float:
    """C = 4 eps gamma / (1 - gamma)^2 with eps = max_{s,a} |A_old(s, a)|: Theorem 1's coefficient (eq. 9)."""
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"penalty_coefficient: gamma must be in [0, 1), got {gamma}")
    eps = float(advantage(mdp, logits_old, gamma).abs().max())
    return 4.0 * eps * gamma / (1.0 - gamma) ** 2


def curves_along(mdp: TabularMDP, logits_old: torch.Tensor, direction: torch.Tensor, steps, gamma: float) -> dict:
    """J, L, the performance difference, D_KL^max and Theorem 1's lower bound at theta_old + t * direction.

    logits_old, direction: (S, A); steps: K values of t. Returns float64 tensors (K,) under "steps",
    "objective" (J), "surrogate" (L), "performance_difference" (J(theta) - J(theta_old) by the lemma),
    "max_kl" (D_KL^max) and "bound" (L - C D_KL^max), and the float "penalty" (C).
    """
    old = logits_old.to(torch.float64)
    C = penalty_coefficient(mdp, old, gamma)
    rows = {key: [] for key in ("objective", "surrogate", "performance_difference", "max_kl")}
    with torch.no_grad():
        for t in steps:
            logits = old + float(t) * direction.to(torch.float64)
            rows["objective"].append(float(objective(mdp, logits, gamma)))
            rows["surrogate"].append(float(surrogate(mdp, logits, old, gamma)))
            rows["performance_difference"].append(float(performance_difference(mdp, logits, old, gamma)))
            rows["max_kl"].append(float(max_kl(mdp, old, logits)))
    out = {key: torch.tensor(values, dtype=torch.float64) for key, values in rows.items()}
    out["steps"] = torch.tensor([float(t) for t in steps], dtype=torch.float64)
    out["bound"] = out["surrogate"] - C * out["max_kl"]
    out["penalty"] = C
    return out
