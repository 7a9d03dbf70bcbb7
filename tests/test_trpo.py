"""TRPO (rlnotes.algos.trpo): Fisher-vector products against the explicit Fisher matrix, conjugate gradient
against torch.linalg.solve, the step size, the line search's verdicts, the measured KL of every accepted
update, and learning."""

import copy
import dataclasses

import pytest
import torch
from torch.nn.utils import parameters_to_vector

from rlnotes import cli, nets
from rlnotes.advantages import normalize
from rlnotes.algos import trpo
from rlnotes.algos.common import collect_rollout, freeze_distribution, policy_kl
from rlnotes.divergences import kl_categorical, kl_gaussian
from rlnotes.envs import make_vec
from rlnotes.exact import trust_region
from rlnotes.utils import course_seed

torch.set_num_threads(1)
F64 = torch.float64
RANDOM_CARTPOLE_RETURN = 22.0  # mean return of uniformly random actions on CartPole-v1 (about 22)
# Bounds on trained runs: each held on 15 runs (seed offsets 0-4 x torch kernels native, default, avx2) with a
# margin below the worst; the measured ranges are in benchmarks/claims.md (tools/claims.py).
TRPO_BOUND = 4.0  # x random; worst 149.4 (6.8x)


def small_categorical_policy(seed=0):
    torch.manual_seed(seed)
    policy = nets.CategoricalPolicy(3, 4, hidden=(5,)).double()
    for p in policy.parameters():  # larger weights than the 0.01 output gain: a policy far from uniform
        p.data.normal_(0.0, 0.8)
    return policy


def explicit_fisher(policy, obs):
    """F = mean over states of sum_a pi(a|s) grad log pi(a|s) grad log pi(a|s)^T, by enumerating the actions."""
    params = list(policy.parameters())
    P = sum(p.numel() for p in params)
    F = torch.zeros(P, P, dtype=F64)
    for s in range(len(obs)):
        dist = policy(obs[s : s + 1])
        for a in range(dist.probs.shape[-1]):
            logp = dist.log_prob(torch.tensor([a]))[0]
            g = trpo.flat_grad(logp, params, retain_graph=True)
            F += dist.probs[0, a].detach() * torch.outer(g, g)
    return F / len(obs)


def test_fisher_vector_product_equals_the_explicit_fisher_matrix():
    policy = small_categorical_policy()
    obs = torch.randn(7, 3, dtype=F64, generator=torch.Generator().manual_seed(1))
    old = freeze_distribution(policy(obs))
    kl = policy_kl(old, policy(obs)).mean()  # 0 at theta_old; its Hessian is F
    assert abs(kl.item()) < 1e-12
    F = explicit_fisher(policy, obs)
    assert torch.linalg.eigvalsh(F).min() > -1e-10  # symmetric positive semi-definite, as a Fisher must be
    g = torch.Generator().manual_seed(2)
    for damping in (0.0, 0.1):
        fvp = trpo.fisher_vector_product(kl, policy.parameters(), damping)
        for _ in range(3):
            v = torch.randn(F.shape[0], dtype=F64, generator=g)
            torch.testing.assert_close(fvp(v), F @ v + damping * v)
    with pytest.raises(ValueError, match="fisher_vector_product: v must have shape"):
        fvp(torch.zeros(3, dtype=F64))


def test_fisher_vector_product_of_a_gaussian_policy_equals_the_hessian_of_the_kl():
    torch.manual_seed(3)
    policy = nets.GaussianPolicy(3, 2, hidden=(4,), log_std_init=-0.3).double()
    obs = torch.randn(6, 3, dtype=F64)
    params = list(policy.parameters())
    theta_old = parameters_to_vector(params).detach()
    old = freeze_distribution(policy(obs))
    shapes = [p.shape for p in params]

    def kl_of(theta):  # the same mean KL, as a function of the flat parameter vector
        chunks, start = [], 0
        for shape in shapes:
            n = shape.numel()
            chunks.append(theta[start : start + n].reshape(shape))
            start += n
        log_std, W1, b1, W2, b2 = chunks  # a module's own parameters come before its submodules'
        mean = torch.tanh(obs @ W1.T + b1) @ W2.T + b2
        return kl_gaussian(old.base_dist.loc, old.base_dist.scale, mean, log_std.exp().expand_as(mean)).mean()

    H = torch.autograd.functional.hessian(kl_of, theta_old)
    fvp = trpo.fisher_vector_product(policy_kl(old, policy(obs)).mean(), params)
    v = torch.randn(len(theta_old), dtype=F64)
    torch.testing.assert_close(fvp(v), H @ v)
    # the log-std block of the Fisher of a Gaussian is 2 I (independent of the mean): a closed form
    assert params[0] is policy.log_std
    e = torch.zeros(len(theta_old), dtype=F64)
    e[1] = 1.0
    torch.testing.assert_close(fvp(e)[:2], torch.tensor([0.0, 2.0], dtype=F64))


def test_conjugate_gradient_solves_a_random_spd_system():
    g = torch.Generator().manual_seed(0)
    M = torch.randn(20, 20, dtype=F64, generator=g)
    A = M @ M.T + 0.5 * torch.eye(20, dtype=F64)  # symmetric positive definite
    b = torch.randn(20, dtype=F64, generator=g)
    residuals = []
    x = trpo.conjugate_gradient(lambda v: A @ v, b, iterations=60, tol=1e-20,
                                callback=lambda i, x, res: residuals.append(res))
    torch.testing.assert_close(x, torch.linalg.solve(A, b), rtol=1e-8, atol=1e-8)
    assert len(residuals) <= 60 and residuals[-1] < 1e-9
    # with few iterations, still a descent on the quadratic 1/2 x^T A x - b^T x, from 0 at x = 0
    x3 = trpo.conjugate_gradient(lambda v: A @ v, b, iterations=3)
    assert 0.5 * x3 @ A @ x3 - b @ x3 < 0
    # in exact arithmetic, CG on an n x n system converges in n steps: here 3 distinct eigenvalues, 3 steps
    Q, _ = torch.linalg.qr(torch.randn(20, 20, dtype=F64, generator=g))
    A3 = Q @ torch.diag(torch.tensor([1.0] * 7 + [3.0] * 7 + [10.0] * 6, dtype=F64)) @ Q.T
    torch.testing.assert_close(trpo.conjugate_gradient(lambda v: A3 @ v, b, iterations=3), torch.linalg.solve(A3, b))
    with pytest.raises(ValueError, match="conjugate_gradient: iterations must be >= 1"):
        trpo.conjugate_gradient(lambda v: A @ v, b, iterations=0)
    with pytest.raises(ValueError, match="conjugate_gradient: b must be a vector"):
        trpo.conjugate_gradient(lambda v: A @ v, b[:, None])


def test_conjugate_gradient_of_zero_is_exactly_zero():
    # b = 0: the first step was 0 / 0 = NaN
    A = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=F64)
    x = trpo.conjugate_gradient(lambda v: A @ v, torch.zeros(2, dtype=F64))
    assert torch.equal(x, torch.zeros(2, dtype=F64))


def test_trpo_step_with_a_constant_batch_takes_no_step():
    """A batch of equal advantages normalizes to exactly 0, so g = 0: no step, not a NaN or an exception."""
    policy = small_categorical_policy()
    obs = torch.randn(16, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    actions = torch.randint(4, (16,), generator=torch.Generator().manual_seed(2))
    advantages = normalize(torch.full((16,), 0.35, dtype=F64))
    theta_old = parameters_to_vector(policy.parameters()).detach().clone()
    info = trpo.trpo_step(policy, obs, actions, advantages, max_kl=0.01)
    assert not info["accepted"] and info["trials"] == [] and info["step_size"] == 0.0
    assert info["kl"] == 0.0 and info["improvement"] == 0.0 and info["expected_improvement"] == 0.0
    assert torch.equal(parameters_to_vector(policy.parameters()).detach(), theta_old)


def test_max_step_size_puts_the_quadratic_model_at_delta():
    F = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=F64)
    s = torch.tensor([1.0, -3.0], dtype=F64)
    beta = trpo.max_step_size(s, F @ s, 0.02)
    assert (0.5 * (beta * s) @ F @ (beta * s)).item() == pytest.approx(0.02)
    assert beta.item() == pytest.approx((2 * 0.02 / (s @ F @ s)).sqrt().item())
    with pytest.raises(ValueError, match="max_step_size: max_kl must be > 0"):
        trpo.max_step_size(s, F @ s, 0.0)
    with pytest.raises(ValueError, match="max_step_size: s\\^T F s must be > 0"):
        trpo.max_step_size(torch.zeros(2, dtype=F64), torch.zeros(2, dtype=F64), 0.01)


def test_line_search_accepts_only_a_small_enough_improving_step():
    # fake measurements along the step: KL grows as fraction^2, the surrogate peaks at fraction 0.5
    def measure(theta):
        f = float(theta[0])
        return f * (1.0 - f) - 0.2, 0.04 * f**2

    theta, trials = trpo.line_search(measure, torch.zeros(1), torch.ones(1), max_kl=0.01, backtrack_ratio=0.5)
    # fractions 1 (KL 0.04 > 0.01, and no gain), 0.5 (KL 0.01, gain 0.05): accepted
    assert [t["fraction"] for t in trials] == [1.0, 0.5]
    assert trials[0]["reason"] == "KL too large and no improvement" and trials[1]["accepted"]
    assert theta.item() == 0.5
    theta, trials = trpo.line_search(lambda th: (-1.0, 0.0), torch.zeros(1), torch.ones(1), 0.01, 0.5, max_backtracks=4)
    assert theta.item() == 0.0 and len(trials) == 4 and not any(t["accepted"] for t in trials)
    assert {t["reason"] for t in trials} == {"surrogate did not improve"}
    _, trials = trpo.line_search(lambda th: (1.0, float("nan")), torch.zeros(1), torch.ones(1), 0.01, 0.5, 2)
    assert trials[0]["reason"] == "KL too large"  # NaN is never accepted


def cartpole_batch(seed=0, steps=128):
    envs = make_vec("CartPole-v1", 2, seed=seed)
    obs, _ = envs.reset(seed=seed)
    torch.manual_seed(seed)
    policy = nets.make_policy(envs.single_observation_space, envs.single_action_space)
    rollout, _ = collect_rollout(envs, policy, None, obs, steps)
    batch = rollout.flat()
    # a made-up but fixed advantage: reward pushing the cart to the right
    advantages = normalize(batch["obs"][:, 2] + 0.3 * torch.randn(len(batch["obs"])))
    return policy, batch, advantages


@pytest.mark.parametrize("max_kl", [0.001, 0.01, 0.05])
def test_trpo_step_respects_the_measured_kl(max_kl):
    policy, batch, advantages = cartpole_batch()
    old_policy = copy.deepcopy(policy)
    info = trpo.trpo_step(policy, batch["obs"], batch["actions"], advantages, max_kl=max_kl, damping=0.01)
    assert info["accepted"]
    assert info["predicted_kl"] == pytest.approx(max_kl, rel=1e-4)  # the quadratic model sits at delta
    # measured again, independently: the exact KL between the two networks' action distributions
    with torch.no_grad():
        kl = kl_categorical(old_policy.logits(batch["obs"]), policy.logits(batch["obs"])).mean().item()
    assert kl == pytest.approx(info["kl"], rel=1e-5) and kl <= max_kl
    assert info["improvement"] > 0
    rejected = [t for t in info["trials"] if not t["accepted"]]
    assert all(t["kl"] > max_kl or t["improvement"] <= 0 for t in rejected)


def test_quadratic_and_linear_models_are_exact_near_theta_old():
    policy, batch, advantages = cartpole_batch(seed=1)
    info = trpo.trpo_step(copy.deepcopy(policy), batch["obs"], batch["actions"], advantages, max_kl=0.01, damping=0.1,
                          cg_iterations=20)
    s, Fs = info["direction"], info["fisher_direction"]
    small = info["step_size"] * torch.tensor([0.02, 0.05, 0.1])
    along = trust_region.along_direction(policy, batch["obs"], batch["actions"], advantages, info["theta_old"], s, small)
    sFs = float(s @ Fs) - 0.1 * float(s @ s)  # F s without the damping term: the true Fisher's quadratic form
    quadratic = 0.5 * small.double() ** 2 * sFs
    linear = small.double() * float(info["g"] @ s)
    torch.testing.assert_close(along["kl"], quadratic, rtol=0.05, atol=0.0)
    torch.testing.assert_close(along["improvement"], linear, rtol=0.05, atol=0.0)
    assert torch.equal(parameters_to_vector(policy.parameters()).detach(), info["theta_old"])  # restored


def test_trpo_step_with_a_gaussian_policy():
    envs = make_vec("Pendulum-v1", 2, seed=0)
    obs, _ = envs.reset(seed=0)
    torch.manual_seed(0)
    policy = nets.make_policy(envs.single_observation_space, envs.single_action_space)
    rollout, _ = collect_rollout(envs, policy, None, obs, 64)
    batch = rollout.flat()
    advantages = normalize(batch["actions"][:, 0] * batch["obs"][:, 1])  # any fixed, state-dependent signal
    info = trpo.trpo_step(policy, batch["obs"], batch["actions"], advantages, max_kl=0.01)
    assert info["accepted"] and 0 < info["kl"] <= 0.01 and info["improvement"] > 0


@pytest.mark.trained
def test_every_accepted_update_of_a_training_run_stays_in_the_trust_region(measured):
    """Also the learning test: a short run must beat random play by far (budget: 8k env steps, a few seconds)."""
    config = trpo.Config(seed=course_seed(1), total_steps=8_192, progress_bar=False, stop_when_solved=False)
    records = []
    history = trpo.train(config, progress=records.append)
    assert len(history["kl"]) == len(history["accepted"]) == len(history["update_steps"]) >= 4
    for kl, accepted in zip(history["kl"], history["accepted"]):
        assert (0 < kl <= config.max_kl) if accepted else kl == 0.0
    assert measured("eval_mean", history["eval_mean"]) > TRPO_BOUND * RANDOM_CARTPOLE_RETURN, history["eval_means"]
    assert records and records[-1]["step"] == history["eval_steps"][-1]
    assert all(0.0 <= c <= 1.0 for c in history["clip_fraction"]) and all(k >= 0 for k in history["approx_kl"])
    assert len(history["eval_returns"]) == config.eval_episodes


@pytest.mark.parametrize("field, value", [("max_kl", 0.0), ("backtrack_ratio", 1.0), ("gamma", 1.5), ("cg_iterations", 0)])
def test_bad_config_is_rejected(field, value):
    with pytest.raises(ValueError, match=field):
        trpo.Config(**{field: value})


def test_cli_builds_trpo_options_from_the_config():
    args = cli.build_parser().parse_args(["train", "trpo", "--env", "CartPole-v1", "--seed", "3", "--max-kl", "0.02"])
    config = cli.config_from_args(trpo.Config, args)
    assert (config.seed, config.max_kl, config.batch_size) == (3, 0.02, 1024)
    assert dataclasses.asdict(config)["num_envs"] == 2


def test_trpo_step_defaults_equal_the_config_defaults():
    """One source of truth: the function's keyword defaults are the Config's (damping was 0.1 against 1e-3)."""
    import inspect

    defaults = {k: v.default for k, v in inspect.signature(trpo.trpo_step).parameters.items()
                if v.default is not inspect.Parameter.empty}
    config = trpo.Config()
    for name in ("max_kl", "damping", "cg_iterations", "backtrack_ratio", "max_backtracks"):
        assert defaults[name] == getattr(config, name), name
