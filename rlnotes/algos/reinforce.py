"""REINFORCE: the Monte Carlo policy gradient, with reward-to-go and a baseline (Williams 1992).

Introduced in notebook 02 (policy gradient). The policy's value is an expectation over actions,
V(s) = sum_a pi(a|s) Q(s, a) (an integral for continuous actions), so its gradient is

    dV/dtheta = sum_a dpi(a|s)/dtheta * Q(s, a)                      (discrete: a sum over actions)
              = E_{A ~ pi}[ dlog pi(A|s)/dtheta * Q(s, A) ]            (any actions: the log-derivative trick)

and the second form can be estimated by sampling: play, then weight the gradient of each action's
log-probability by how good it turned out (its reward-to-go), minus a baseline that does not depend
on the action. The loss whose gradient is that estimate is `rlnotes.objectives.pg_loss`.

The first half of this module holds the small exact problems of the notebook (a softmax "bandit",
a tabular policy on the gridworld, a Gaussian policy on a quadratic reward), where the true gradient
is known and the Monte Carlo estimate can be checked against it. The second half is the trainer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from rlnotes.advantages import discounted_returns, normalize
from rlnotes.algos import tabular
from rlnotes._checks import check_fields
from rlnotes.algos.common import Evaluator, env_actions
from rlnotes.envs import TabularMDP, make_vec
from rlnotes.nets import ValueNetwork, flat_size, make_policy
from rlnotes.objectives import pg_loss, value_loss
from rlnotes.utils import seed_everything

__all__ = [
    # exact problems (notebook 02)
    "sum_over_actions_gradient", "estimate_gradients", "bandit_surrogate", "estimator_variance",
    "gaussian_quadratic_objective", "gaussian_quadratic_gradient", "gaussian_surrogate",
    "tabular_value_gradient", "tabular_policy_gradient_theorem", "sample_episodes", "episode_surrogate",
    # the trainer
    "Config", "Batch", "collect_episodes", "train",
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


def _sample_rows(probs: torch.Tensor, generator) -> torch.Tensor:
    """One index per row of probs (n, K), by inverse CDF (much faster than torch.multinomial for many rows)."""
    u = torch.rand(probs.shape[0], 1, generator=generator, dtype=probs.dtype)  # (n, 1)
    return (u > probs.cumsum(-1)).sum(-1).clamp(max=probs.shape[-1] - 1)  # (n, K) -> (n,)


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
    alive = ~mdp.terminal[state]
    out = {k: [] for k in ("states", "actions", "rewards", "next_states", "alive", "terminated")}
    for _ in range(max_steps):
        if not alive.any():
            break
        action = _sample_rows(policy[state].double(), generator)  # (n,)
        next_state = _sample_rows(mdp.P[state, action], generator)  # (n,)
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


# ---- the trainer --------------------------------------------------------------------------------


@dataclass
class Config:
    env: str = field(default="CartPole-v1", metadata={"help": "gymnasium id: Box observations; Discrete (categorical policy) or Box actions (Gaussian policy)"})
    seed: int = field(default=1, metadata={"help": "seed of python, numpy, torch and the envs"})
    total_steps: int = field(default=200_000, metadata={"help": "budget of environment steps used for learning (all envs together)"})
    num_envs: int = field(default=8, metadata={"help": "episodes per update: one per env, all started afresh"})
    learning_rate: float = field(default=3e-3, metadata={"help": "Adam step size of the policy"})
    gamma: float = field(default=0.99, metadata={"help": "discount of the reward-to-go, in [0, 1]"})
    baseline: str = field(default="value", metadata={"help": "subtracted from the reward-to-go: 'value' (a learned V(s)), 'mean' (batch mean) or 'none'"})
    value_learning_rate: float = field(default=1e-3, metadata={"help": "Adam step size of the value baseline"})
    value_iters: int = field(default=40, metadata={"help": "full-batch gradient steps of the value baseline per update"})
    normalize_advantages: bool = field(default=True, metadata={"help": "centre and scale the weights of each batch (advantages.normalize)"})
    ent_coef: float = field(default=0.0, metadata={"help": "weight of the entropy bonus"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "clip the policy gradient's global norm to this"})
    hidden_size: int = field(default=64, metadata={"help": "units in each hidden layer of the policy and value networks"})
    hidden_layers: int = field(default=2, metadata={"help": "number of hidden layers"})
    log_std_init: float = field(default=0.0, metadata={"help": "initial log standard deviation of a Gaussian policy"})
    max_episode_steps: int = field(default=0, metadata={"help": "time limit of an episode; 0 keeps the env's own"})
    eval_every: int = field(default=2_048, metadata={"help": "env steps between deterministic evaluations (not timed)"})
    eval_episodes: int = field(default=10, metadata={"help": "deterministic episodes per evaluation, and in the final one"})
    stop_when_solved: bool = field(default=True, metadata={"help": "stop once an evaluation reaches the env's reward_threshold"})
    num_threads: int = field(default=1, metadata={"help": "torch.set_num_threads; 1 is fastest for small nets"})
    progress_bar: bool = field(default=True, metadata={"help": "show a tqdm progress bar"})

    def __post_init__(self):
        check_fields(
            self, "reinforce.Config",
            at_least_one=(
                "total_steps", "num_envs", "hidden_size", "eval_every", "eval_episodes", "num_threads",
                "value_iters",
            ),
            unit_interval=("gamma",),
            positive=("learning_rate", "value_learning_rate", "max_grad_norm"),
            non_negative=("hidden_layers", "seed", "max_episode_steps", "ent_coef"),
        )
        if self.baseline not in ("value", "mean", "none"):
            raise ValueError(f"reinforce.Config: baseline must be 'value', 'mean' or 'none', got {self.baseline!r}")

    @property
    def hidden(self) -> tuple:
        return (self.hidden_size,) * self.hidden_layers

    @property
    def env_kwargs(self) -> dict:
        return {"max_episode_steps": self.max_episode_steps} if self.max_episode_steps else {}


@dataclass
class Batch:
    """One episode from each of N envs, padded to the longest: obs (T, N, obs_size); actions (T, N) or
    (T, N, D); rewards, terminated, truncated, mask (T, N). mask marks the steps of each env's first
    episode; later steps (an env waits for the others) are not learned from."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    mask: torch.Tensor

    @property
    def episode_returns(self) -> list:
        """Undiscounted return of each env's first episode; rewards after it are dropped (selected, not
        multiplied by the mask, so a NaN there cannot leak)."""
        return torch.where(self.mask, self.rewards, torch.zeros_like(self.rewards)).sum(0).tolist()

    @property
    def steps(self) -> int:
        return int(self.mask.sum())


@torch.no_grad()
def collect_episodes(envs: gym.vector.VectorEnv, policy, seed: int | None = None) -> Batch:
    """Reset every env of `envs` and play until each has finished its first episode.

    Whole episodes, one per env, all from the current policy: the Monte Carlo return of every step is
    then known without any bootstrap. Envs that finish early keep stepping (a vector env steps all of
    its envs) but those steps are masked out, and the next batch starts from a fresh reset.
    """
    N = envs.num_envs
    obs, _ = envs.reset(seed=seed)
    running = np.ones(N, dtype=bool)
    buf = {k: [] for k in ("obs", "actions", "rewards", "terminated", "truncated", "mask")}
    while running.any():
        obs_t = torch.as_tensor(obs, dtype=torch.float32)  # (N, obs_size)
        actions = policy.sample(obs_t)  # (N,) or (N, D)
        next_obs, rewards, terminated, truncated, _ = envs.step(env_actions(actions, envs.single_action_space))
        buf["obs"].append(obs_t)
        buf["actions"].append(actions)
        buf["rewards"].append(torch.as_tensor(rewards, dtype=torch.float32))
        buf["terminated"].append(torch.as_tensor(terminated & running))
        buf["truncated"].append(torch.as_tensor(truncated & running))
        buf["mask"].append(torch.as_tensor(running.copy()))
        running &= ~(terminated | truncated)
        obs = next_obs  # the classic trap: forget this and the agent replays its first observation forever
    return Batch(**{k: torch.stack(v) for k, v in buf.items()})  # T x (N, ...) -> (T, N, ...)


def _check_spaces(envs) -> None:
    flat_size(envs.single_observation_space)  # raises unless Box
    make_policy(envs.single_observation_space, envs.single_action_space)  # raises unless Discrete or 1-d Box


HISTORY_KEYS = (
    "episode_steps", "episode_returns", "update_steps", "policy_loss", "value_loss", "entropy",
    "eval_steps", "eval_means", "eval_seconds",
)


def train(config: Config, progress=None) -> dict:
    """Train REINFORCE; return the history (dict of lists and numbers) plus the trained policy under "agent".

    Each update: N whole episodes; reward-to-go G_t of every step (advantages.discounted_returns, the
    sum cut where the episode ended); weights G_t - b(s_t); one gradient step on pg_loss; then the
    value baseline regressed on G_t. progress(record) is called after each evaluation. Keys:
        episode_steps, episode_returns        each training episode (stochastic policy)
        update_steps, policy_loss, value_loss, entropy    each update (value_loss: NaN without a value baseline)
        eval_steps, eval_means, eval_seconds   each evaluation; eval_seconds = training time so far
        solved_step, solved_seconds            first evaluation at the env's reward_threshold (or None)
        train_seconds, env_steps               totals (evaluation time excluded)
        eval_returns, eval_mean                the final evaluation, on seeds not used before
        agent                                  the trained policy (its .deterministic acts greedily)
    """
    # seed
    torch.set_num_threads(config.num_threads)
    seed_everything(config.seed)

    # envs
    envs = make_vec(config.env, config.num_envs, seed=config.seed, **config.env_kwargs)
    _check_spaces(envs)

    # nets and optimizer
    policy = make_policy(envs.single_observation_space, envs.single_action_space, config.hidden, log_std_init=config.log_std_init)
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate)
    value_net = ValueNetwork(flat_size(envs.single_observation_space), config.hidden) if config.baseline == "value" else None
    value_optimizer = torch.optim.Adam(value_net.parameters(), lr=config.value_learning_rate) if value_net else None

    # storage
    history = {key: [] for key in HISTORY_KEYS}

    step, update, train_seconds = 0, 0, 0.0
    bar = tqdm(total=config.total_steps, desc="reinforce", unit="step", disable=not config.progress_bar)
    evaluator = Evaluator(config, history, progress, bar)
    while step < config.total_steps:
        tick = time.perf_counter()

        # rollout: one whole episode from every env, no gradient
        batch = collect_episodes(envs, policy, seed=config.seed if update == 0 else None)  # later resets continue the envs' RNG
        update += 1
        before, step = step, step + batch.steps
        for ret in batch.episode_returns:
            history["episode_steps"].append(step)
            history["episode_returns"].append(ret)

        # returns and advantages: reward-to-go, cut where each episode ended; minus the baseline
        ended = batch.terminated | batch.truncated  # (T, N); no bootstrap: REINFORCE is pure Monte Carlo
        returns = discounted_returns(batch.rewards, config.gamma, terminated=ended)  # (T, N)
        mask = batch.mask  # (T, N) bool
        obs, actions, returns = batch.obs[mask], batch.actions[mask], returns[mask]  # flatten: (T, N, ...) -> (B, ...)
        if value_net is not None:
            with torch.no_grad():
                advantages = returns - value_net(obs)
        elif config.baseline == "mean":
            advantages = returns - returns.mean()
        else:
            advantages = returns
        if config.normalize_advantages and len(advantages) > 1:
            advantages = normalize(advantages)

        # update: one policy-gradient step, then the value baseline
        dist = policy(obs)
        entropy = dist.entropy().mean()
        loss = pg_loss(dist.log_prob(actions), advantages) - config.ent_coef * entropy
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
        optimizer.step()
        v_loss = float("nan")
        if value_net is not None:
            for _ in range(config.value_iters):
                v_loss_t = value_loss(value_net(obs), returns)
                value_optimizer.zero_grad()
                v_loss_t.backward()
                value_optimizer.step()
            v_loss = v_loss_t.item()
        train_seconds += time.perf_counter() - tick
        bar.update(batch.steps)

        # diagnostics: deterministic evaluation (not timed), early stop when solved
        history["update_steps"].append(step)
        history["policy_loss"].append(loss.item())
        history["value_loss"].append(v_loss)
        history["entropy"].append(entropy.item())
        recent = history["episode_returns"][-config.num_envs:]
        if evaluator(policy.deterministic, before, step, train_seconds, train_return=float(np.mean(recent)),
                     entropy=entropy.item()):
            break
    bar.close()
    envs.close()

    evaluator.finish(policy.deterministic, step, train_seconds)
    history["agent"] = policy
    return history
