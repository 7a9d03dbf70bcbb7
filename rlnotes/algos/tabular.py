"""Tabular methods on a `TabularMDP`: exact dynamic programming (chapter 00), sampled returns,
and TD learning from samples (chapter 01): TD(0), SARSA, Q-learning.

Notation (chapter 00):
    pi(a|s)       the policy, a tensor (S, A) whose rows sum to 1
    V_pi(s)       expected return from s when following pi
    Q_pi(s, a)    expected return after taking a in s, then following pi
    Q*(s, a)      max over all policies of Q_pi(s, a); V*(s) = max_a Q*(s, a)

The dynamic programming is exact (float64 linear algebra), so the sampled and learned estimates
(the TD section at the end of this module, and the later chapters) have a ground truth to be
compared with.
"""

from __future__ import annotations

import numpy as np
import torch

from rlnotes.advantages import _td_target
from rlnotes.envs import GridWorldEnv, TabularMDP
from rlnotes.nets import sample_categorical

__all__ = [
    "uniform_policy",
    "greedy_policy",
    "q_from_v",
    "bellman_expectation_backup",
    "bellman_optimality_backup",
    "policy_evaluation",
    "value_iteration",
    "q_of_every_deterministic_policy",
    "sample_returns",
    # learning from samples (chapter 01)
    "epsilon_greedy",
    "epsilon_greedy_optimum",
    "td0_update",
    "sarsa_update",
    "q_learning_update",
    "td0_evaluation",
    "sarsa",
    "q_learning",
]


def _check_gamma(gamma: float, where: str) -> None:
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"{where}: gamma must be in [0, 1], got {gamma}")


def _check_policy(mdp: TabularMDP, policy: torch.Tensor, where: str) -> None:
    if policy.shape != (mdp.n_states, mdp.n_actions):
        raise ValueError(
            f"{where}: policy {tuple(policy.shape)} must be (S, A) = ({mdp.n_states}, {mdp.n_actions})"
        )
    if (policy < 0).any() or not torch.allclose(policy.sum(-1).double(), torch.ones(mdp.n_states, dtype=torch.float64)):
        raise ValueError(f"{where}: every row of policy must be a probability distribution")


def uniform_policy(mdp: TabularMDP) -> torch.Tensor:
    """pi(a|s) = 1/A in every state, shape (S, A)."""
    return torch.full((mdp.n_states, mdp.n_actions), 1.0 / mdp.n_actions, dtype=torch.float64)


def greedy_policy(q: torch.Tensor) -> torch.Tensor:
    """The deterministic policy that picks argmax_a Q(s, a) (first action on ties), one-hot (S, A)."""
    return torch.nn.functional.one_hot(q.argmax(-1), q.shape[-1]).to(torch.float64)


def q_from_v(mdp: TabularMDP, v: torch.Tensor, gamma: float) -> torch.Tensor:
    """Q(s, a) = sum_s' P(s'|s, a) [r(s, a, s') + gamma V(s')], shape (S, A).

    One step of the environment is known exactly; what follows it is summarized by V.
    Numerical safety: transitions of probability 0 add exactly 0, even where their reward or V(s') is
    inf or NaN (``0 * inf`` would be NaN).
    """
    _check_gamma(gamma, "q_from_v")
    outcome = mdp.R + gamma * v  # (S, A, S): r(s, a, s') + gamma V(s')
    outcome = torch.where(mdp.P > 0, outcome, 0.0)  # 0 where the transition never happens
    return (mdp.P * outcome).sum(-1)  # (S, A, S) -> (S, A)


def bellman_expectation_backup(mdp: TabularMDP, v: torch.Tensor, policy: torch.Tensor, gamma: float) -> torch.Tensor:
    """One sweep of V(s) <- sum_a pi(a|s) Q(s, a) with Q = q_from_v(V). Iterating it converges to V_pi."""
    return (policy * q_from_v(mdp, v, gamma)).sum(-1)


def bellman_optimality_backup(mdp: TabularMDP, v: torch.Tensor, gamma: float) -> torch.Tensor:
    """One sweep of V(s) <- max_a Q(s, a) with Q = q_from_v(V). Iterating it converges to V*."""
    return q_from_v(mdp, v, gamma).max(-1).values


def policy_evaluation(mdp: TabularMDP, policy: torch.Tensor, gamma: float) -> torch.Tensor:
    """V_pi exactly, by solving the linear Bellman equations V = r_pi + gamma P_pi V.

    Terminal states have value 0, so only the non-terminal states enter the system. With gamma = 1
    the system is singular when pi can wander forever without reaching a terminal state; then there
    is no finite V_pi and a ValueError says so.
    Returns V of shape (S,).
    """
    _check_gamma(gamma, "policy_evaluation")
    _check_policy(mdp, policy, "policy_evaluation")
    policy = policy.to(torch.float64)
    live = ~mdp.terminal
    P_pi = torch.einsum("sa,sat->st", policy, mdp.P)[live][:, live]  # (S', S')
    r_pi = (policy * mdp.expected_reward).sum(-1)[live]  # (S',)
    system = torch.eye(int(live.sum()), dtype=torch.float64) - gamma * P_pi
    v = torch.zeros(mdp.n_states, dtype=torch.float64)
    try:
        v[live] = torch.linalg.solve(system, r_pi)
    except RuntimeError as err:  # torch raises on an exactly singular matrix
        raise ValueError("policy_evaluation: no finite V_pi (the policy may never reach a terminal state with gamma=1)") from err
    if not torch.isfinite(v).all() or torch.linalg.cond(system) > 1e12:
        raise ValueError("policy_evaluation: no finite V_pi (the policy may never reach a terminal state with gamma=1)")
    return v


def value_iteration(mdp: TabularMDP, gamma: float, tol: float = 1e-12, max_iters: int = 100_000):
    """Q* by repeating the Bellman optimality backup until V changes by less than `tol`.

    Returns (v_star (S,), q_star (S, A), deltas) where deltas[k] = max_s |V_{k+1}(s) - V_k(s)|,
    the curve that shows the convergence.
    """
    _check_gamma(gamma, "value_iteration")
    if tol <= 0:
        raise ValueError(f"value_iteration: tol must be > 0, got {tol}")
    v = torch.zeros(mdp.n_states, dtype=torch.float64)
    deltas = []
    for _ in range(max_iters):
        v_new = bellman_optimality_backup(mdp, v, gamma)
        deltas.append(float((v_new - v).abs().max()))
        v = v_new
        if deltas[-1] < tol:
            break
    else:
        raise RuntimeError(f"value_iteration: no convergence to tol={tol} in {max_iters} sweeps")
    return v, q_from_v(mdp, v, gamma), deltas


def q_of_every_deterministic_policy(mdp: TabularMDP, gamma: float, max_policies: int = 2**20) -> torch.Tensor:
    """Q_pi for every deterministic policy, by brute force: shape (A ** S_live, S, A).

    Only the non-terminal states' choices matter (terminal states absorb with reward 0), so there
    are A ** S_live policies. Used to check Q*(s, a) = max_pi Q_pi(s, a) by enumeration; needs
    gamma < 1 so that every policy, even one that never ends, has a finite value.
    """
    _check_gamma(gamma, "q_of_every_deterministic_policy")
    if gamma >= 1.0:
        raise ValueError("q_of_every_deterministic_policy: gamma must be < 1 (some policies never end)")
    live = (~mdp.terminal).nonzero().flatten()
    n_live, A, S = len(live), mdp.n_actions, mdp.n_states
    count = A**n_live
    if count > max_policies:
        raise ValueError(f"q_of_every_deterministic_policy: {count} policies exceed max_policies={max_policies}")
    # choice[k, j] = action of policy k in live state j: the digits of k in base A.
    digits = torch.arange(count).unsqueeze(1) // (A ** torch.arange(n_live)) % A  # (count, S_live)
    P_live = mdp.P[live][:, :, live]  # (S_live, A, S_live)
    r_live = mdp.expected_reward[live]  # (S_live, A)
    rows = torch.arange(n_live)
    P_pi = P_live[rows, digits]  # (count, S_live, S_live)
    r_pi = r_live[rows, digits]  # (count, S_live)
    eye = torch.eye(n_live, dtype=torch.float64)
    v_live = torch.linalg.solve(eye - gamma * P_pi, r_pi.unsqueeze(-1)).squeeze(-1)  # (count, S_live)
    v = torch.zeros(count, S, dtype=torch.float64)
    v[:, live] = v_live
    return (mdp.P * (mdp.R + gamma * v[:, None, None, :])).sum(-1)  # (count, S, A)


def sample_returns(
    mdp: TabularMDP,
    policy: torch.Tensor,
    gamma: float,
    n_episodes: int,
    generator: torch.Generator | None = None,
    start: int | None = None,
    max_steps: int = 1000,
) -> torch.Tensor:
    """Play `n_episodes` episodes in parallel and return their discounted returns, shape (n_episodes,).

    Both sources of randomness are sampled here: the action from pi(.|s), then the next state from
    P(.|s, a). The mean of the returns estimates V_pi(start). Episodes still running after
    `max_steps` are cut there (choose max_steps so that gamma**max_steps is negligible, or so that
    the policy surely ends).
    Numerical safety: an episode that has ended adds nothing, by selection, so a NaN or inf in mdp.R at
    a terminal state does not leak into its return (``0 * nan`` would be NaN).
    """
    _check_gamma(gamma, "sample_returns")
    _check_policy(mdp, policy, "sample_returns")
    if n_episodes < 1:
        raise ValueError(f"sample_returns: n_episodes must be >= 1, got {n_episodes}")
    state = torch.full((n_episodes,), mdp.start if start is None else start, dtype=torch.long)
    log_policy, log_P = policy.double().log(), mdp.P.log()  # (S, A), (S, A, S); log 0 = -inf: never drawn
    returns = torch.zeros(n_episodes, dtype=torch.float64)
    discount = torch.ones(n_episodes, dtype=torch.float64)
    for _ in range(max_steps):
        alive = ~mdp.terminal[state]
        if not alive.any():
            break
        action = sample_categorical(log_policy[state], generator)  # (n,): a ~ pi(.|s)
        next_state = sample_categorical(log_P[state, action], generator)  # (n,): s' ~ P(.|s, a)
        reward = mdp.R[state, action, next_state]
        returns += torch.where(alive, discount * reward, torch.zeros_like(returns))  # no 0 * nan after the end
        discount *= gamma
        state = next_state
    return returns


# ---------------------------------------------------------------------------------------------
# Learning from samples (chapter 01)
#
# Everything above reads P and R. From here on the agent only sees transitions
# (s, a, r, s', terminated, truncated) sampled by a GridWorldEnv, and learns a table from them by
# temporal-difference (TD) updates. The exact tables above are the ground truth each learning
# curve is measured against. Every update takes its target from `rlnotes.advantages.td_target` (its formula).
# ---------------------------------------------------------------------------------------------


def epsilon_greedy(q: torch.Tensor, epsilon: float) -> torch.Tensor:
    """The epsilon-greedy policy of a Q-table, shape (S, A).

    With probability epsilon a uniformly random action, otherwise argmax_a Q(s, a) (first action on
    ties, as `greedy_policy`): the greedy action gets 1 - epsilon + epsilon/A, every other epsilon/A.
    Introduced in notebook 01.
    """
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon_greedy: epsilon must be in [0, 1], got {epsilon}")
    n_actions = q.shape[-1]
    return (1.0 - epsilon) * greedy_policy(q) + epsilon / n_actions


def epsilon_greedy_optimum(mdp: TabularMDP, gamma: float, epsilon: float, max_iters: int = 100):
    """The best epsilon-greedy policy and its Q, exactly: policy iteration among epsilon-greedy policies.

    SARSA with a fixed epsilon converges to this Q, not to Q*: it evaluates the policy it really
    follows, exploration included (Sutton & Barto, sections 5.4 and 6.4). epsilon = 0 gives Q*.
    Returns (q (S, A), policy (S, A)). Introduced in notebook 01.
    """
    _check_gamma(gamma, "epsilon_greedy_optimum")
    q = value_iteration(mdp, gamma)[1]  # start from Q*: usually one or two improvements remain
    for _ in range(max_iters):
        policy = epsilon_greedy(q, epsilon)
        q_new = q_from_v(mdp, policy_evaluation(mdp, policy, gamma), gamma)
        if torch.equal(q_new.argmax(-1), q.argmax(-1)):  # improving would not change the policy
            return q_new, policy
        q = q_new
    raise RuntimeError(f"epsilon_greedy_optimum: the policy still changes after {max_iters} improvements")


# The three updates: one transition in, a new table out. Only the "next value" differs.


def td0_update(v, state, reward, next_state, terminated, alpha, gamma) -> torch.Tensor:
    """TD(0): V(s) <- V(s) + alpha * (r + gamma * (1 - terminated) * V(s') - V(s)). Returns a new (S,) table.

    The target re-predicts the return once one step is known: the reward r is observed, the rest
    is still the table's guess V(s'). Their difference from V(s) is the TD error. Notebook 01.
    """
    _check_gamma(gamma, "td0_update")
    return _td0_update(v, state, reward, next_state, bool(terminated), alpha, gamma)


def sarsa_update(q, state, action, reward, next_state, next_action, terminated, alpha, gamma) -> torch.Tensor:
    """SARSA: Q(s, a) <- Q(s, a) + alpha * (r + gamma * (1 - terminated) * Q(s', a') - Q(s, a)).

    a' is the action the agent will really take in s' (exploration included): SARSA evaluates the
    policy it follows (on-policy). Returns a new (S, A) table. Notebook 01.
    """
    _check_gamma(gamma, "sarsa_update")
    return _q_update(q, state, action, reward, q[next_state, next_action], bool(terminated), alpha, gamma)


def q_learning_update(q, state, action, reward, next_state, terminated, alpha, gamma) -> torch.Tensor:
    """Q-learning: Q(s, a) <- Q(s, a) + alpha * (r + gamma * (1 - terminated) * max_a' Q(s', a') - Q(s, a)).

    The target assumes the best action in s', whatever the agent does next: Q-learning learns Q*
    from any behaviour that keeps trying every action (off-policy). Returns a new (S, A) table.
    Notebook 01.
    """
    _check_gamma(gamma, "q_learning_update")
    return _q_update(q, state, action, reward, q[next_state].max(), bool(terminated), alpha, gamma)


# The updates without their entry checks: the loops below check gamma once (`_check_learning`) and
# call these at every step (the validation policy: check at the boundary, never inside a loop).


def _td0_update(v, state, reward, next_state, terminated: bool, alpha, gamma) -> torch.Tensor:
    target = _td_target(torch.as_tensor(reward, dtype=v.dtype), v[next_state], torch.as_tensor(terminated), gamma)
    v = v.clone()
    v[state] += alpha * (target - v[state])
    return v


def _q_update(q, state, action, reward, next_value, terminated: bool, alpha, gamma) -> torch.Tensor:
    target = _td_target(torch.as_tensor(reward, dtype=q.dtype), next_value, torch.as_tensor(terminated), gamma)
    q = q.clone()
    q[state, action] += alpha * (target - q[state, action])
    return q


# The three loops: play episodes in a GridWorldEnv, update after every step.


def _check_learning(where, gamma, episodes, alpha, alpha_power, epsilon=0.0):
    _check_gamma(gamma, where)
    if episodes < 1:
        raise ValueError(f"{where}: episodes must be >= 1, got {episodes}")
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"{where}: alpha must be in (0, 1], got {alpha}")
    if not 0.0 <= alpha_power <= 1.0:
        raise ValueError(f"{where}: alpha_power must be in [0, 1], got {alpha_power}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"{where}: epsilon must be in [0, 1], got {epsilon}")


def _as_env(env) -> GridWorldEnv:
    return GridWorldEnv(env) if isinstance(env, TabularMDP) else env


def _step_size(alpha: float, visits: int, alpha_power: float) -> float:
    """alpha / n**alpha_power for the n-th update of a table entry.

    alpha_power = 0: a constant step, fast but the table keeps jittering around the truth.
    alpha_power in (0.5, 1]: steps shrink so that the noise averages out (Robbins-Monro conditions),
    and the table converges to the exact values.
    """
    return alpha / visits**alpha_power


def _new_history(exact) -> dict:
    return {"episode_return": [], "episode_length": [], **({"max_error": []} if exact is not None else {})}


def _record(history, episode_return, episode_length, table, exact) -> None:
    history["episode_return"].append(episode_return)
    history["episode_length"].append(episode_length)
    if exact is not None:
        history["max_error"].append(float((table - exact).abs().max()))


def _choose(q_row: torch.Tensor, epsilon: float, rng: np.random.Generator) -> int:
    """An epsilon-greedy action for one state (the same distribution as `epsilon_greedy`)."""
    if rng.random() < epsilon:
        return int(rng.integers(len(q_row)))
    return int(q_row.argmax())


def td0_evaluation(env, policy, gamma, episodes, alpha=0.1, alpha_power=0.0, v_exact=None, seed=0):
    """Learn V_pi of a fixed policy from sampled episodes with TD(0). Notebook 01.

    env:         a GridWorldEnv (or a TabularMDP, wrapped in one)
    policy:      (S, A) the policy that chooses the actions and whose values are learned
    alpha, alpha_power: step size alpha / n**alpha_power at the n-th update of a state
    v_exact:     (S,) optional; then history["max_error"][k] = max_s |V(s) - v_exact(s)| after episode k
    Returns (v (S,), history) with history["episode_return"], ["episode_length"] (undiscounted).
    """
    env = _as_env(env)
    _check_learning("td0_evaluation", gamma, episodes, alpha, alpha_power)
    _check_policy(env.mdp, policy, "td0_evaluation")
    generator = torch.Generator().manual_seed(seed)
    log_policy = policy.double().log()  # (S, A): a ~ pi(.|s) by `nets.sample_categorical`
    v = torch.zeros(env.mdp.n_states, dtype=torch.float64)
    visits = np.zeros(env.mdp.n_states, dtype=np.int64)
    history = _new_history(v_exact)
    for episode in range(episodes):
        state, _ = env.reset(seed=seed if episode == 0 else None)
        total, length, done = 0.0, 0, False
        while not done:
            action = int(sample_categorical(log_policy[state], generator))
            next_state, reward, terminated, truncated, _ = env.step(action)
            visits[state] += 1
            # Truncated: s' is a real state whose future was cut by the time limit, so V(s') is
            # still bootstrapped; only terminated zeroes it (inside the TD target).
            v = _td0_update(v, state, reward, next_state, terminated, _step_size(alpha, visits[state], alpha_power), gamma)
            total, length, done = total + reward, length + 1, terminated or truncated
            state = next_state
        _record(history, total, length, v, v_exact)
    return v, history


def sarsa(env, gamma, episodes, alpha=0.1, alpha_power=0.0, epsilon=0.1, q_exact=None, seed=0):
    """SARSA: learn Q of the epsilon-greedy policy the agent follows, and improve it as Q changes. Notebook 01.

    With a fixed epsilon the table converges to `epsilon_greedy_optimum(mdp, gamma, epsilon)[0]`.
    Arguments as `td0_evaluation`, plus epsilon (exploration) and q_exact (S, A) for the error curve.
    Returns (q (S, A), history).
    """
    env = _as_env(env)
    _check_learning("sarsa", gamma, episodes, alpha, alpha_power, epsilon)
    rng = np.random.default_rng(seed)
    q = torch.zeros(env.mdp.n_states, env.mdp.n_actions, dtype=torch.float64)
    visits = np.zeros((env.mdp.n_states, env.mdp.n_actions), dtype=np.int64)
    history = _new_history(q_exact)
    for episode in range(episodes):
        state, _ = env.reset(seed=seed if episode == 0 else None)
        action = _choose(q[state], epsilon, rng)
        total, length, done = 0.0, 0, False
        while not done:
            next_state, reward, terminated, truncated, _ = env.step(action)
            # a' is drawn from the same epsilon-greedy policy, even after a truncation (to value s');
            # then it is not executed, since the episode is over.
            next_action = _choose(q[next_state], epsilon, rng)
            visits[state, action] += 1
            alpha_n = _step_size(alpha, visits[state, action], alpha_power)
            q = _q_update(q, state, action, reward, q[next_state, next_action], terminated, alpha_n, gamma)  # SARSA
            total, length, done = total + reward, length + 1, terminated or truncated
            state, action = next_state, next_action
        _record(history, total, length, q, q_exact)
    return q, history


def q_learning(env, gamma, episodes, alpha=0.1, alpha_power=0.0, epsilon=0.1, q_exact=None, seed=0):
    """Q-learning: act epsilon-greedily, learn Q* (the values of the greedy policy). Notebook 01.

    Arguments as `sarsa`. Returns (q (S, A), history).
    """
    env = _as_env(env)
    _check_learning("q_learning", gamma, episodes, alpha, alpha_power, epsilon)
    rng = np.random.default_rng(seed)
    q = torch.zeros(env.mdp.n_states, env.mdp.n_actions, dtype=torch.float64)
    visits = np.zeros((env.mdp.n_states, env.mdp.n_actions), dtype=np.int64)
    history = _new_history(q_exact)
    for episode in range(episodes):
        state, _ = env.reset(seed=seed if episode == 0 else None)
        total, length, done = 0.0, 0, False
        while not done:
            action = _choose(q[state], epsilon, rng)
            next_state, reward, terminated, truncated, _ = env.step(action)
            visits[state, action] += 1
            alpha_n = _step_size(alpha, visits[state, action], alpha_power)
            q = _q_update(q, state, action, reward, q[next_state].max(), terminated, alpha_n, gamma)  # Q-learning
            total, length, done = total + reward, length + 1, terminated or truncated
            state = next_state
        _record(history, total, length, q, q_exact)
    return q, history
