"""TRPO: a policy step inside a KL trust region (Schulman et al. 2015, "Trust Region Policy Optimization").

Introduced in notebook 04. The study notes ask: the constraint compares the old and the new policy,
but before the update there is no new policy, so how can the distance be measured? The paper's
Appendix C answers in four steps, one function each here:

    1. models at theta_old   the surrogate's gradient g (a LINEAR model of the objective) and the Fisher
                             matrix F (a QUADRATIC model of the KL: KL ~ 1/2 d^T F d). Both are
                             derivatives at theta_old: the old policy and its data are all they need.
    2. direction             s = F^-1 g by `conjugate_gradient`, which needs only products F v
                             (`fisher_vector_product`, double backprop), never F itself
    3. size                  the step that reaches the quadratic model's boundary,
                             beta = sqrt(2 delta / s^T F s)                  (`max_step_size`)
    4. check                 now candidate new policies exist: `line_search` MEASURES the true KL
                             (`rlnotes.divergences`) and the true surrogate at theta_old + beta s,
                             + 0.8 beta s, ... and keeps the first with KL <= delta that improves.

So the distance is predicted before the update (step 3) and measured after a candidate step (step 4).
Why the surrogate is trusted only near theta_old (its states come from the old policy) is computed
exactly on a tabular MDP in `rlnotes.exact.surrogate` (notebook 04, section 1).
The critic is fitted by plain regression (`fit_value`), separately from the trust-region step.

Defaults: RL Zoo's tuned TRPO hyperparameters for CartPole-v1 (rl-baselines3-zoo, hyperparams/trpo.yml:
n_envs 2, n_steps 512, batch_size 512, cg_damping 1e-3, gae_lambda 0.98, gamma 0.99,
learning_rate 1e-3, n_critic_updates 20, n_timesteps 1e5) and sb3-contrib's TRPO defaults for the
rest (target_kl 0.01, cg_max_steps 15, line_search_shrinking_factor 0.8, line_search_max_iter 10,
normalize_advantage True; networks 64x64 tanh, Adam eps 1e-5 as SB3's ActorCriticPolicy). Renamed:
n_envs -> num_envs, n_steps -> num_steps, batch_size -> value_minibatch_size, target_kl -> max_kl,
cg_damping -> damping, cg_max_steps -> cg_iterations, line_search_shrinking_factor -> backtrack_ratio,
line_search_max_iter -> max_backtracks, learning_rate -> value_learning_rate,
n_critic_updates -> value_epochs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters
from tqdm.auto import tqdm

from rlnotes._checks import check_fields, option
from rlnotes.advantages import gae, normalize
from rlnotes.algos.common import Evaluator, collect_rollout, freeze_distribution, policy_kl, surrogate_and_kl
from rlnotes.divergences import kl_estimate
from rlnotes.envs import make_vec
from rlnotes.nets import ValueNetwork, flat_size, make_policy
from rlnotes.objectives import clip_fraction, explained_variance, surrogate_loss, value_loss
from rlnotes.utils import seed_everything

__all__ = [
    "Config", "flat_grad", "fisher_vector_product", "conjugate_gradient", "max_step_size", "line_search",
    "surrogate_and_kl", "trpo_step", "fit_value", "train",
]


@dataclass
class Config:
    env: str = option("CartPole-v1", "gymnasium id: Box observations, Discrete or Box actions")
    seed: int = option(1, "seed of python, numpy, torch and the envs")
    total_steps: int = option(100_000, "budget of env steps, all envs together")
    num_envs: int = option(2, "parallel envs collecting the rollout; typical 1-16")
    num_steps: int = option(512, "steps of each env per rollout (batch = num_envs * num_steps); typical 512-2048")
    max_kl: float = option(0.01, "delta, the trust region's bound on mean KL(pi_old || pi); typical 0.001-0.05")
    damping: float = option(1e-3, "added to F's diagonal (F + damping I), keeps CG stable; typical 1e-3 to 0.1")
    cg_iterations: int = option(15, "conjugate-gradient iterations for s = F^-1 g; typical 10-20")
    backtrack_ratio: float = option(0.8, "line search: shrink the step by this factor, in (0, 1); typical 0.5-0.8")
    max_backtracks: int = option(10, "line search: candidate steps tried before giving up; typical 10-15")
    gamma: float = option(0.99, "discount factor in [0, 1]; typical 0.95-0.999")
    gae_lambda: float = option(0.98, "GAE lambda in [0, 1]; typical 0.9-0.99")
    normalize_advantages: bool = option(True, "centre and scale the advantages of each batch")
    value_learning_rate: float = option(1e-3, "Adam step size of the critic; typical 1e-4 to 1e-3")
    value_epochs: int = option(20, "passes of critic regression over each batch; typical 5-20")
    value_minibatch_size: int = option(512, "samples per critic gradient step; typical 64-512")
    hidden_size: int = option(64, "units in each hidden layer (policy and critic); typical 32-256")
    hidden_layers: int = option(2, "number of hidden layers (policy and critic); typical 1-3")
    log_std_init: float = option(0.0, "initial log std of a Gaussian policy (Box actions); typical -1 to 0")
    eval_every: int = option(2_048, "env steps between deterministic evaluations (not timed)")
    eval_episodes: int = option(10, "deterministic episodes per evaluation, and in the final one")
    stop_when_solved: bool = option(True, "stop once an evaluation reaches the env's reward_threshold")
    num_threads: int = option(1, "torch.set_num_threads; 1 is fastest for small nets")
    progress_bar: bool = option(True, "show a tqdm progress bar")

    def __post_init__(self):
        check_fields(
            self, "trpo.Config",
            at_least_one=(
                "total_steps", "num_envs", "num_steps", "cg_iterations", "max_backtracks", "value_epochs",
                "value_minibatch_size", "hidden_size", "eval_every", "eval_episodes", "num_threads",
            ),
            unit_interval=("gamma", "gae_lambda"),
            positive=("max_kl", "value_learning_rate"),
            non_negative=("damping", "hidden_layers", "seed"),
        )
        if not 0.0 < self.backtrack_ratio < 1.0:
            raise ValueError(f"trpo.Config: backtrack_ratio must be in (0, 1), got {self.backtrack_ratio}")

    @property
    def batch_size(self) -> int:
        """Samples per policy update: num_envs * num_steps."""
        return self.num_envs * self.num_steps


# ---- step 1: the models at theta_old (gradient, Fisher-vector products) --------------------------


def flat_grad(output: torch.Tensor, params, create_graph: bool = False, retain_graph=None) -> torch.Tensor:
    """d output / d params, concatenated into one vector (P,), P = total number of parameters."""
    grads = torch.autograd.grad(output, params, create_graph=create_graph, retain_graph=retain_graph)
    return torch.cat([g.reshape(-1) for g in grads])


def fisher_vector_product(kl: torch.Tensor, params, damping: float = 0.0):
    """A function v -> (F + damping I) v, where F is the Hessian of `kl` with respect to `params`.

    kl: the scalar mean KL(pi_old || pi_theta), computed AT theta = theta_old with pi_old detached
    (`freeze_distribution`). At that point its gradient is 0 and its Hessian is the Fisher information
    matrix, the metric that turns a parameter step into a KL:

        F = mean over the batch's states s_t of  E_{a ~ pi_old(.|s_t)}[ grad log pi(a|s_t) grad log pi(a|s_t)^T ]

    The expectation over actions is exact in every sampled state (the KL is exact per state), as in
    Appendix C.1 of the TRPO paper; it is not an outer product over the sampled actions a_t.

    Double backprop (Pearlmutter's trick): differentiate once keeping the graph, g_kl(theta); then for
    each v, differentiate the scalar g_kl . v once more: d(g_kl . v)/d theta = H v. No P x P matrix is
    ever formed: one product costs about two backward passes, whatever P.
    """
    params = list(params)
    grad_kl = flat_grad(kl, params, create_graph=True)  # (P,), still differentiable

    def fvp(v: torch.Tensor) -> torch.Tensor:
        if v.shape != grad_kl.shape:
            raise ValueError(f"fisher_vector_product: v must have shape {tuple(grad_kl.shape)}, got {tuple(v.shape)}")
        return flat_grad(grad_kl @ v, params, retain_graph=True) + damping * v  # (P,)

    return fvp


# ---- step 2: the direction s = F^-1 g by conjugate gradient ---------------------------------------


def conjugate_gradient(matrix_vector_product, b: torch.Tensor, iterations: int = 10, tol: float = 1e-10,
                       callback=None) -> torch.Tensor:
    """Solve A x = b for a symmetric positive-definite A known only through v -> A v.

    Each iteration moves along a new search direction that is A-conjugate to all previous ones
    (p_i^T A p_j = 0), so after k iterations x is the best solution in a k-dimensional subspace and,
    in exact arithmetic, the exact one after P iterations. TRPO stops after about 10 to 15: the
    direction is good enough long before, and each iteration costs one Fisher-vector product.

    Args:
        matrix_vector_product: v (P,) -> A v (P,).
        b: (P,) right-hand side (TRPO: the surrogate's gradient g).
        iterations: at most this many iterations, >= 1.
        tol: stop when the squared residual |b - A x|^2 falls below it.
        callback: optional, called as callback(iteration, x, residual_norm) after each iteration.

    Numerical safety: b = 0 returns x = 0 exactly (the solution) instead of iterating on 0 / 0 = NaN;
    TRPO meets it when every advantage of a batch is 0 (e.g. a constant batch, normalized).

    Returns:
        x: (P,), the approximate solution.
    """
    if b.dim() != 1:
        raise ValueError(f"conjugate_gradient: b must be a vector (P,), got shape {tuple(b.shape)}")
    if iterations < 1:
        raise ValueError(f"conjugate_gradient: iterations must be >= 1, got {iterations}")
    x = torch.zeros_like(b)
    r = b.clone()  # residual b - A x, with x = 0
    p = b.clone()  # first search direction: the residual
    rr = r @ r
    if rr == 0:  # b = 0: x = 0 solves A x = b exactly
        return x
    for i in range(iterations):
        Ap = matrix_vector_product(p)
        alpha = rr / (p @ Ap)  # exact minimizer along p
        x = x + alpha * p
        r = r - alpha * Ap
        rr_new = r @ r
        if callback is not None:
            callback(i, x, float(rr_new.sqrt()))
        if rr_new < tol:
            break
        p = r + (rr_new / rr) * p  # the new direction, conjugate to the old ones
        rr = rr_new
    return x


# ---- step 3: the size of the step ------------------------------------------------------------


def max_step_size(direction: torch.Tensor, fisher_direction: torch.Tensor, max_kl: float) -> torch.Tensor:
    """beta = sqrt(2 delta / s^T F s): the step beta * s that puts the quadratic KL model exactly at delta.

    From 1/2 (beta s)^T F (beta s) = delta. direction: s (P,); fisher_direction: F s (P,).
    """
    if not max_kl > 0:
        raise ValueError(f"max_step_size: max_kl must be > 0, got {max_kl}")
    sFs = direction @ fisher_direction
    if not sFs > 0:
        raise ValueError(f"max_step_size: s^T F s must be > 0 (F positive definite, s nonzero), got {float(sFs)}")
    return torch.sqrt(2.0 * max_kl / sFs)


# ---- step 4: measure, and shrink until the step is acceptable ----------------------------------


def line_search(measure, theta_old: torch.Tensor, full_step: torch.Tensor, max_kl: float,
                backtrack_ratio: float = 0.8, max_backtracks: int = 10):
    """Try theta_old + full_step, + ratio * full_step, + ratio^2 * full_step, ...; keep the first acceptable.

    measure(theta) -> (improvement, kl): the TRUE change of the surrogate and the TRUE mean
    KL(pi_old || pi_theta) of the candidate. A candidate is accepted only if kl <= max_kl and
    improvement > 0; the quadratic model chose the step, the measurement decides.

    Returns:
        (theta, trials): the accepted parameters (theta_old if none was accepted) and one dict a
        candidate: fraction (of full_step), improvement, kl, accepted, reason.
    """
    trials = []
    for k in range(max_backtracks):
        fraction = backtrack_ratio**k
        theta = theta_old + fraction * full_step
        improvement, kl = measure(theta)
        too_far, no_gain = not kl <= max_kl, not improvement > 0  # `not <=` also rejects NaN
        reason = ("KL too large and no improvement" if too_far and no_gain else "KL too large" if too_far
                  else "surrogate did not improve" if no_gain else "accepted")
        trials.append({"fraction": fraction, "improvement": float(improvement), "kl": float(kl),
                       "accepted": reason == "accepted", "reason": reason})
        if reason == "accepted":
            return theta, trials
    return theta_old, trials


def trpo_step(policy: nn.Module, obs: torch.Tensor, actions: torch.Tensor, advantages: torch.Tensor,
              max_kl: float = 0.01, damping: float = 1e-3, cg_iterations: int = 15, backtrack_ratio: float = 0.8,
              max_backtracks: int = 10) -> dict:
    """One TRPO policy update, in place: maximize mean(r * A) subject to mean KL(pi_old || pi) <= max_kl.

    The policy as it is on entry is pi_old. Args: obs (B, obs_size), actions (B,) or (B, D),
    advantages (B,). Returns a dict that shows every stage (the notebook plots them):
        g, direction, fisher_direction     the surrogate's gradient, s = F^-1 g, F s  (P,)
        cg_residuals                       |g - F x| after each CG iteration
        step_size, full_step               beta = sqrt(2 delta / s^T F s), beta * s
        expected_improvement               g . full_step (the linear model's promise)
        predicted_kl                       1/2 full_step^T F full_step (= max_kl, the quadratic model)
        trials                             the line search's candidates (see `line_search`)
        accepted, kl, improvement          the outcome, measured; kl = 0 if no step was accepted
        theta_old, theta_new               flat parameter vectors (P,)

    Numerical safety: when g = 0 (e.g. every advantage is 0) there is nothing to improve: no step is
    taken (step_size 0, no trials, accepted False) instead of 0 / 0 in the step size.
    """
    params = [p for p in policy.parameters() if p.requires_grad]
    theta_old = parameters_to_vector(params).detach()
    with torch.no_grad():
        old_dist = freeze_distribution(policy(obs))  # pi_old: data, no gradient
        old_logp = old_dist.log_prob(actions)  # (B,)

    # step 1: the linear model of the surrogate (its gradient g at theta_old) ...
    dist = policy(obs)
    surrogate = -surrogate_loss(dist.log_prob(actions), old_logp, advantages).mean()
    g = flat_grad(surrogate, params, retain_graph=True)  # (P,): at theta_old this is the policy gradient
    # ... and the quadratic model of the KL (its Hessian F at theta_old, as products F v)
    kl = policy_kl(old_dist, dist).mean()  # 0 here, but its second derivative is F
    fvp = fisher_vector_product(kl, params, damping)

    # step 2: the direction s = F^-1 g, by conjugate gradient
    cg_residuals = []
    direction = conjugate_gradient(fvp, g, cg_iterations, callback=lambda i, x, res: cg_residuals.append(res))
    fisher_direction = fvp(direction).detach()
    direction = direction.detach()

    # step 3: the largest step the quadratic model allows (none at all when g = 0: s = 0, s^T F s = 0)
    flat = not bool(direction.any())
    step_size = torch.zeros((), dtype=direction.dtype) if flat else max_step_size(direction, fisher_direction, max_kl)
    full_step = step_size * direction
    expected_improvement = float(g @ full_step)

    # step 4: measure the real surrogate and KL of candidates, shrinking the step until both are fine
    surrogate_old = float(surrogate.detach())

    def measure(theta):
        vector_to_parameters(theta, params)
        new_surrogate, new_kl = surrogate_and_kl(policy, obs, actions, old_logp, advantages, old_dist)
        return float(new_surrogate) - surrogate_old, float(new_kl)

    if flat:
        theta_new, trials = theta_old, []
    else:
        theta_new, trials = line_search(measure, theta_old, full_step, max_kl, backtrack_ratio, max_backtracks)
    vector_to_parameters(theta_new.clone(), params)  # a copy: the parameters become views of the vector given
    accepted = any(t["accepted"] for t in trials)
    final = trials[-1] if accepted else {"kl": 0.0, "improvement": 0.0}
    return {
        "g": g.detach(), "direction": direction, "fisher_direction": fisher_direction, "cg_residuals": cg_residuals,
        "step_size": float(step_size), "full_step": full_step, "expected_improvement": expected_improvement,
        "predicted_kl": float(0.5 * step_size**2 * (direction @ fisher_direction)), "trials": trials,
        "accepted": accepted, "kl": final["kl"], "improvement": final["improvement"],
        "theta_old": theta_old, "theta_new": theta_new.detach(), "old_logp": old_logp,
        "surrogate_old": surrogate_old,
    }


# ---- the critic ----------------------------------------------------------------------------


def fit_value(value_net: nn.Module, optimizer: torch.optim.Optimizer, obs: torch.Tensor, returns: torch.Tensor,
              epochs: int, minibatch_size: int, generator: torch.Generator | None = None) -> float:
    """Regress V(s) on the returns: `epochs` passes over (obs (B, obs_size), returns (B,)) in shuffled
    minibatches, each a gradient step on `rlnotes.objectives.value_loss`. Returns the last epoch's mean loss."""
    B = len(returns)
    for _ in range(epochs):
        order = torch.randperm(B, generator=generator)
        losses = []
        for start in range(0, B, minibatch_size):
            rows = order[start : start + minibatch_size]
            loss = value_loss(value_net(obs[rows]), returns[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return float(np.mean(losses))


# ---- the training loop ----------------------------------------------------------------------


HISTORY_KEYS = (
    "episode_steps", "episode_returns", "update_steps", "kl", "accepted", "step_fraction", "backtracks",
    "improvement", "expected_improvement", "approx_kl", "clip_fraction", "explained_variance", "value_loss",
    "entropy", "eval_steps", "eval_means", "eval_seconds",
)


def train(config: Config, progress=None) -> dict:
    """Train TRPO; return the history (dict of lists and numbers) plus the trained policy under "agent".

    progress(record) is called after each evaluation with a small dict (step, eval_mean, kl,
    train_seconds). Keys of the history:
        episode_steps, episode_returns         each finished training episode
        update_steps                           env steps at each policy update, and per update:
          kl, accepted                           the measured KL(pi_old || pi_new) (0 if rejected) and
                                                 whether the line search accepted a step
          step_fraction, backtracks              the accepted fraction of the full step, candidates rejected
          improvement, expected_improvement      the measured and the linear model's surrogate gain
          approx_kl, clip_fraction               k3 estimate of the KL from the samples; fraction of
                                                 ratios outside PPO's [0.8, 1.2], for comparison
          explained_variance, value_loss         the critic before and after its fit
          entropy                                mean policy entropy on the batch
        eval_steps, eval_means, eval_seconds   each evaluation; eval_seconds = training time so far
        solved_step, solved_seconds            first evaluation at the env's reward_threshold (or None)
        train_seconds, env_steps               totals (evaluation time excluded)
        eval_returns, eval_mean                the final evaluation, on seeds not used before
        agent, value_net                       the trained policy and critic
    """
    # seed
    torch.set_num_threads(config.num_threads)
    generator = seed_everything(config.seed)

    # envs
    envs = make_vec(config.env, config.num_envs, seed=config.seed)
    obs_size = flat_size(envs.single_observation_space)

    # nets and optimizer (the policy has none: its step is the trust-region step)
    hidden = (config.hidden_size,) * config.hidden_layers
    policy = make_policy(envs.single_observation_space, envs.single_action_space, hidden, nn.Tanh, config.log_std_init)
    value_net = ValueNetwork(obs_size, hidden, nn.Tanh)
    value_optimizer = torch.optim.Adam(value_net.parameters(), lr=config.value_learning_rate, eps=1e-5)

    # storage
    history = {key: [] for key in HISTORY_KEYS}

    obs, _ = envs.reset(seed=config.seed)
    step, train_seconds = 0, 0.0
    bar = tqdm(total=config.total_steps, desc="trpo", unit="step", disable=not config.progress_bar)
    evaluator = Evaluator(config, history, progress, bar)
    while step < config.total_steps:
        tick = time.perf_counter()

        # rollout: num_steps steps of every env, no gradient
        rollout, obs = collect_rollout(envs, policy, value_net, obs, config.num_steps)
        before, step = step, step + config.batch_size
        for ret in rollout.episode_returns:
            history["episode_steps"].append(step)
            history["episode_returns"].append(ret)

        # bootstrap and advantages: GAE, termination and truncation kept apart
        with torch.no_grad():
            advantages, returns = gae(rollout.rewards, rollout.values, rollout.next_values, rollout.terminated,
                                      rollout.truncated, config.gamma, config.gae_lambda)  # (T, N)

        # flatten (T, N) -> (B,)
        batch = rollout.flat()
        advantages, returns = advantages.reshape(-1), returns.reshape(-1)
        if config.normalize_advantages:
            advantages = normalize(advantages)

        # update, the policy: one trust-region step (TRPO has no epochs of minibatches for it)
        info = trpo_step(policy, batch["obs"], batch["actions"], advantages, config.max_kl, config.damping,
                         config.cg_iterations, config.backtrack_ratio, config.max_backtracks)

        # update, the critic: epochs of minibatch regression on the returns
        explained = float(explained_variance(batch["values"], returns))
        fitted_loss = fit_value(value_net, value_optimizer, batch["obs"], returns, config.value_epochs,
                                config.value_minibatch_size, generator)

        # diagnostics: how far did the policy move, how good is the critic
        with torch.no_grad():
            dist = policy(batch["obs"])
            new_logp = dist.log_prob(batch["actions"])
            entropy = float(dist.entropy().mean())
        accepted_trials = [t for t in info["trials"] if t["accepted"]]
        history["update_steps"].append(step)
        history["kl"].append(info["kl"])
        history["accepted"].append(info["accepted"])
        history["step_fraction"].append(accepted_trials[0]["fraction"] if accepted_trials else 0.0)
        history["backtracks"].append(len(info["trials"]) - len(accepted_trials))
        history["improvement"].append(info["improvement"])
        history["expected_improvement"].append(info["expected_improvement"])
        history["approx_kl"].append(float(kl_estimate(info["old_logp"], new_logp, "k3").mean()))
        history["clip_fraction"].append(float(clip_fraction(new_logp, info["old_logp"], 0.2)))
        history["explained_variance"].append(explained)
        history["value_loss"].append(fitted_loss)
        history["entropy"].append(entropy)
        train_seconds += time.perf_counter() - tick
        bar.update(config.batch_size)

        # evaluation (not timed), early stop when solved
        if evaluator(policy.deterministic, before, step, train_seconds, kl=info["kl"]):
            break
    bar.close()
    envs.close()

    evaluator.finish(policy.deterministic, step, train_seconds)
    history.update(agent=policy, value_net=value_net)
    return history
