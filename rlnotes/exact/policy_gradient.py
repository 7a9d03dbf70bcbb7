"""Chapter 02's exact problems: policy gradients whose true value is known, to check the estimates against.

Introduced in notebook 02 (policy gradient). Three small problems where the gradient of the expected
return can be computed exactly, so that the Monte Carlo (log-derivative) estimate of REINFORCE can be
compared with the truth, and its variance measured:

    a softmax "bandit"      one state, A actions: `sum_over_actions_gradient` (the notes' discrete sum,
                            by enumeration) against `bandit_surrogate` estimates; `estimator_variance`
    a Gaussian policy       on a quadratic reward, with a closed-form objective and gradient
    a tabular policy        on the gridworld: the true gradient by autograd through exact policy
                            evaluation, the policy gradient theorem, and sampled episodes

The trainer (`rlnotes.algos.reinforce`) uses none of this: it holds only the algorithm. These are
labs, like the widgets: they call the package (`objectives.pg_loss`, `algos.tabular`) and add no
formula of their own.
"""

from __future__ import annotations

import torch

from rlnotes.algos import tabular
from rlnotes.envs import TabularMDP
from rlnotes.nets import sample_categorical
from rlnotes.objectives import pg_loss

__all__ = [
    "sum_over_actions_gradient", "estimate_gradients", "bandit_surrogate", "estimator_variance",
    "gaussian_quadratic_objective", "gaussian_quadratic_gradient", "gaussian_surrogate",
    "tabular_value_gradient", "tabular_policy_gradient_theorem", "sample_episodes", "episode_surrogate",
]


# ---- the discrete formula, exactly: a softmax policy over A actions in one state --------------


def sum_over_actions_gradient(logits: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The notes' discrete formula, by enumeration: sum_a dpi(a)/dlogits * Q(a), shape (A,).

    logits: (A,), the policy's parameters (pi = softmax(logits)); q: (A,), the action values Q(s, a),
    held fixed. Each term's gradient dpi(a)/dlogits comes from autograd, one action at a time.
    """
    if logits.dim() != 1 or q.shape != logits.shape:
        raise ValueError(f"sum_over_actions_gradient: logits {tuple(logits.shape)} and q {tuple(q.shape)} must both be (A,)")
    theta = logits.detach().clone().requires_grad_(True)
    probs = torch.softmax(theta, -1)  # (A,)
    total = torch.zeros_like(theta)
    for a in range(len(q)):
        (dpi_a,) = torch.autograd.grad(probs[a], theta, retain_graph=True)  # (A,): dpi(a)/dtheta
        total += dpi_a * q[a]
    return total


def bandit_surrogate(logits: torch.Tensor, actions: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """-pg_loss for a softmax policy in one state: mean_b log pi(a_b) * w_b; its gradient is the estimate.

    logits (A,); actions (B,) long; weights (B,), e.g. Q(a_b) or Q(a_b) - baseline.
    """
    logp = torch.log_softmax(logits, -1)[actions]  # (A,) -> (B,)
    return -pg_loss(logp, weights)


def estimate_gradients(surrogate, theta: torch.Tensor, *batches: torch.Tensor) -> torch.Tensor:
    """M independent Monte Carlo gradient estimates: the gradient of surrogate(theta, *batch_m) for each m.

    surrogate(theta, *tensors) -> scalar, e.g. `bandit_surrogate`; each of `batches` has a leading
    dimension M (one batch of samples per estimate). Per-estimate gradients come from
    torch.func.vmap(torch.func.grad(...)). Returns (M, *theta.shape).
    """
    if not batches or any(b.shape[0] != batches[0].shape[0] for b in batches):
        raise ValueError("estimate_gradients: batches must share their leading dimension M")
    grad = torch.func.grad(surrogate)
    return torch.func.vmap(grad, in_dims=(None,) + (0,) * len(batches))(theta.detach(), *batches)


def estimator_variance(logits: torch.Tensor, q: torch.Tensor, baseline: float = 0.0) -> torch.Tensor:
    """Total variance (trace of the covariance) of the ONE-sample estimate grad log pi(A) (Q(A) - b), exactly.

    By enumeration: E||g||^2 - ||E g||^2 with E g = sum_a pi(a) g(a); a batch of B samples has 1/B of it.
    The mean does not depend on b (E[grad log pi] = 0), the variance does: a parabola in b.
    """
    probs = torch.softmax(logits, -1)  # (A,)
    scores = torch.eye(len(logits), dtype=logits.dtype) - probs  # (A, A): row a = dlog pi(a)/dlogits
    g = scores * (q - float(baseline)).unsqueeze(-1)  # (A, A): row a = the estimate when A = a
    mean = (probs.unsqueeze(-1) * g).sum(0)  # (A,)
    return (probs * (g**2).sum(-1)).sum() - (mean**2).sum()


# ---- the continuous case: a Gaussian policy on a quadratic reward ------------------------------


def gaussian_quadratic_objective(mean: torch.Tensor, log_std: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """J = E_{a ~ N(mean, diag std^2)}[-||a - target||^2] = -||mean - target||^2 - sum std^2, in closed form.

    mean, log_std, target: (D,). Differentiable: autograd of this is the true gradient.
    """
    return -((mean - target) ** 2).sum() - torch.exp(2 * log_std).sum()


def gaussian_quadratic_gradient(mean: torch.Tensor, log_std: torch.Tensor, target: torch.Tensor):
    """The analytic gradient of `gaussian_quadratic_objective`: (dJ/dmean, dJ/dlog_std), each (D,).

    dJ/dmean = -2 (mean - target);  dJ/dlog_std = -2 std^2.
    """
    return -2.0 * (mean - target), -2.0 * torch.exp(2 * log_std)


def gaussian_surrogate(params: torch.Tensor, actions: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """mean_b log N(a_b; mean, std^2) * w_b with params = cat(mean, log_std) (2D,); actions (B, D); weights (B,)."""
    mean, log_std = params.chunk(2)
    logp = torch.distributions.Normal(mean, log_std.exp(), validate_args=False).log_prob(actions).sum(-1)  # (B, D) -> (B,)
    return -pg_loss(logp, weights)


# ---- many steps: a tabular softmax policy on the gridworld ------------------------------------


def tabular_value_gradient(mdp: TabularMDP, logits: torch.Tensor, gamma: float, start: int | None = None) -> torch.Tensor:
    """The true gradient dV_pi(start)/dlogits, shape (S, A), by autograd through exact policy evaluation.

    pi(.|s) = softmax(logits[s]); V_pi comes from `tabular.policy_evaluation` (a linear solve), which
    autograd differentiates exactly.
    """
    theta = logits.detach().to(torch.float64).clone().requires_grad_(True)
    v = tabular.policy_evaluation(mdp, torch.softmax(theta, -1), gamma)  # (S,)
    (grad,) = torch.autograd.grad(v[mdp.start if start is None else start], theta)
    return grad


def tabular_policy_gradient_theorem(mdp: TabularMDP, logits: torch.Tensor, gamma: float, start: int | None = None,
                                    visits_discount: float | None = None) -> torch.Tensor:
    """The discrete formula applied in every state, weighted by how often the state is visited:

        dV(start)/dtheta = sum_s eta(s) sum_a dpi(a|s)/dtheta Q_pi(s, a),
        eta(s) = sum_t gamma^t P(S_t = s | start)   (discounted visits: e_start (I - gamma P_pi)^-1)

    Q_pi is held fixed (computed exactly, then detached); only pi is differentiated. Returns (S, A).
    visits_discount replaces gamma in eta only (None: gamma). With 1.0, eta counts the visits without
    discount: that is the mean of the estimator that drops gamma^t (weights U_t instead of gamma^t U_t),
    which is therefore NOT dV(start)/dtheta (notebook 02, section 6).
    """
    theta = logits.detach().to(torch.float64).clone().requires_grad_(True)
    policy = torch.softmax(theta, -1)  # (S, A)
    with torch.no_grad():
        v = tabular.policy_evaluation(mdp, policy, gamma)
        q = tabular.q_from_v(mdp, v, gamma)  # (S, A)
        P_pi = torch.einsum("sa,sat->st", policy, mdp.P)  # (S, S)
        P_pi[mdp.terminal] = 0.0  # an episode stops at a terminal state: no more visits
        origin = torch.zeros(mdp.n_states, dtype=torch.float64)
        origin[mdp.start if start is None else start] = 1.0
        discount = gamma if visits_discount is None else visits_discount
        eta = torch.linalg.solve((torch.eye(mdp.n_states, dtype=torch.float64) - discount * P_pi).T, origin)  # (S,)
    (grad,) = torch.autograd.grad((eta.unsqueeze(-1) * policy * q).sum(), theta)
    return grad


def sample_episodes(mdp: TabularMDP, policy: torch.Tensor, n_episodes: int, generator: torch.Generator | None = None,
                    max_steps: int = 200) -> dict:
    """Play `n_episodes` episodes of `policy` (S, A) from mdp.start, in parallel; everything (n, T).

    Returns states, actions, next_states (long), rewards (float64), alive (bool: the step belongs to
    the episode), terminated (bool: the episode ended at this step). Episodes still running after
    `max_steps` are cut (choose it so that gamma**max_steps is negligible).
    Numerical safety: the reward of a step after the end is set to 0 by selection, so a NaN or inf in
    mdp.R at a terminal state does not leak (``0 * nan`` would be NaN).
    """
    if n_episodes < 1 or max_steps < 1:
        raise ValueError(f"sample_episodes: n_episodes and max_steps must be >= 1, got {n_episodes}, {max_steps}")
    state = torch.full((n_episodes,), mdp.start, dtype=torch.long)
    log_policy, log_P = policy.double().log(), mdp.P.log()  # (S, A), (S, A, S); log 0 = -inf: never drawn
    alive = ~mdp.terminal[state]
    out = {k: [] for k in ("states", "actions", "rewards", "next_states", "alive", "terminated")}
    for _ in range(max_steps):
        if not alive.any():
            break
        action = sample_categorical(log_policy[state], generator)  # (n,): a ~ pi(.|s)
        next_state = sample_categorical(log_P[state, action], generator)  # (n,): s' ~ P(.|s, a)
        ends = alive & mdp.terminal[next_state]
        reward = mdp.R[state, action, next_state]
        reward = torch.where(alive, reward, torch.zeros_like(reward))  # (n,); 0 after the end
        for key, value in (("states", state), ("actions", action), ("rewards", reward),
                           ("next_states", next_state), ("alive", alive), ("terminated", ends)):
            out[key].append(value)
        alive = alive & ~ends
        state = next_state
    return {k: torch.stack(v, dim=1) for k, v in out.items()}  # T x (n,) -> (n, T)


def episode_surrogate(theta: torch.Tensor, states, actions, weights, alive) -> torch.Tensor:
    """One episode's REINFORCE surrogate: sum_t log pi(a_t|s_t) w_t over its steps (all (T,)); theta (S, A) logits.

    Its gradient is one episode's estimate of dV(start)/dtheta. The weights choose the estimator
    (U_t = the reward-to-go, the discounted return from step t; U_0 the whole episode's):
        w_t = U_0                            the whole return, at every step (past rewards included)
        w_t = gamma^t U_t                    discounted reward-to-go: an action cannot change the rewards before it
        w_t = gamma^t (U_t - V(s_t))         the same with a baseline that depends on the state only
    These three are unbiased. w_t = U_t (gamma^t dropped, as practical REINFORCE does) is biased: its
    mean counts visits without discount (`tabular_policy_gradient_theorem(..., visits_discount=1.0)`).
    `alive` (T,) masks the steps after the episode ended.
    Numerical safety: masked steps are dropped by selection, so a NaN or inf weight after the end leaks
    neither into the surrogate nor into its gradient.
    """
    logp = torch.log_softmax(theta, -1)[states, actions]  # (S, A) -> (T,)
    alive = torch.as_tensor(alive).bool()
    weights = torch.where(alive, weights, torch.zeros_like(weights))  # zeroed first: no 0 * nan in the gradient
    return torch.where(alive, logp * weights, torch.zeros_like(logp)).sum()
