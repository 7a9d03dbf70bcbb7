"""rlnotes.advantages against plain-python loops and hand-worked cases."""

import statistics

import numpy as np
import pytest
import torch

from rlnotes.advantages import discounted_returns, gae, group_relative, normalize, td_target

F64 = torch.float64


def randn(gen, *shape):
    return torch.randn(*shape, generator=gen, dtype=F64)


# ---------------------------------------------------------------- slow, obviously correct references


def returns_loop(rewards, gamma, terminated, last_value):
    """G_t = r_t + gamma * (1 - done_t) * G_{t+1}, G_T = last_value; python floats, one episode stream."""
    out, G = [0.0] * len(rewards), last_value
    for t in reversed(range(len(rewards))):
        G = rewards[t] + gamma * (0.0 if terminated[t] else 1.0) * G
        out[t] = G
    return out


def gae_brute(r, v, nv, term, trunc, gamma, lam):
    """A_t = sum_k (gamma*lam)^k delta_{t+k}, the sum stopping after the first k where term|trunc is set."""
    T = len(r)
    delta = [r[t] + gamma * (0.0 if term[t] else 1.0) * nv[t] - v[t] for t in range(T)]
    A = []
    for t in range(T):
        s = 0.0
        for k in range(T - t):
            s += (gamma * lam) ** k * delta[t + k]
            if term[t + k] or trunc[t + k]:
                break
        A.append(s)
    return A


def rollout(T=12, N=4, seed=0):
    """Random (T, N) data with terminations and truncations in the middle of the batch."""
    gen = torch.Generator().manual_seed(seed)
    rewards, values, next_values = randn(gen, T, N), randn(gen, T, N), randn(gen, T, N)
    terminated = torch.zeros(T, N, dtype=torch.bool)
    truncated = torch.zeros(T, N, dtype=torch.bool)
    terminated[3, 0] = terminated[7, 2] = terminated[5, 3] = True
    truncated[5, 1] = truncated[9, 0] = truncated[2, 2] = truncated[10, 3] = True
    return rewards, values, next_values, terminated, truncated


def columns(x):
    return x.T.tolist()  # (T, N) -> N lists of T


# ---------------------------------------------------------------- td_target, discounted_returns


def test_td_target_by_hand():
    r = torch.tensor([1.0, 1.0], dtype=F64)
    nv = torch.tensor([2.0, 2.0], dtype=F64)
    # 1 + 0.9 * 2 = 2.8 ; terminal: 1 + 0 = 1
    expected = torch.tensor([2.8, 1.0], dtype=F64)
    torch.testing.assert_close(td_target(r, nv, torch.tensor([False, True]), 0.9), expected)
    torch.testing.assert_close(td_target(r, nv, torch.tensor([0.0, 1.0], dtype=F64), 0.9), expected)


def test_discounted_returns_by_hand():
    # gamma 0.5, terminated at t=1, bootstrap 4: G2 = 3 + 0.5*4 = 5; G1 = 2 (episode ends); G0 = 1 + 0.5*2 = 2
    r = torch.tensor([1.0, 2.0, 3.0], dtype=F64)
    out = discounted_returns(r, 0.5, torch.tensor([False, True, False]), last_value=4.0)
    torch.testing.assert_close(out, torch.tensor([2.0, 2.0, 5.0], dtype=F64))


def test_discounted_returns_1d_against_loop():
    gen = torch.Generator().manual_seed(1)
    r = randn(gen, 15)
    term = torch.zeros(15, dtype=torch.bool)
    term[[4, 9]] = True
    out = discounted_returns(r, 0.97, term, last_value=2.5)
    torch.testing.assert_close(out, torch.tensor(returns_loop(r.tolist(), 0.97, term.tolist(), 2.5), dtype=F64))
    # without terminated, nothing is cut and the bootstrap reaches back to t=0
    out = discounted_returns(r, 0.97, last_value=2.5)
    torch.testing.assert_close(out, torch.tensor(returns_loop(r.tolist(), 0.97, [False] * 15, 2.5), dtype=F64))


def test_discounted_returns_2d_against_loop_with_tensor_bootstrap():
    rewards, _, _, terminated, _ = rollout()
    last_value = torch.tensor([0.5, -1.0, 2.0, 3.0], dtype=F64)
    out = discounted_returns(rewards, 0.9, terminated.double(), last_value=last_value)
    assert out.shape == rewards.shape
    for n, (r, d) in enumerate(zip(columns(rewards), columns(terminated))):
        expected = returns_loop(r, 0.9, d, last_value[n].item())
        torch.testing.assert_close(out[:, n], torch.tensor(expected, dtype=F64))


# ---------------------------------------------------------------- GAE


@pytest.mark.parametrize("gamma, lam", [(0.99, 0.95), (0.9, 0.5), (1.0, 1.0)])
def test_gae_against_brute_force_with_terminations_and_truncations(gamma, lam):
    rewards, values, next_values, terminated, truncated = rollout()
    adv, ret = gae(rewards, values, next_values, terminated, truncated, gamma, lam)
    for n in range(rewards.shape[1]):
        expected = gae_brute(
            *(columns(x)[n] for x in (rewards, values, next_values, terminated, truncated)), gamma, lam
        )
        torch.testing.assert_close(adv[:, n], torch.tensor(expected, dtype=F64))
    torch.testing.assert_close(ret, adv + values)


def test_gae_accepts_bool_or_float_flags():
    rewards, values, next_values, terminated, truncated = rollout()
    a_bool, _ = gae(rewards, values, next_values, terminated, truncated, 0.99, 0.95)
    a_float, _ = gae(rewards, values, next_values, terminated.double(), truncated.float(), 0.99, 0.95)
    torch.testing.assert_close(a_bool, a_float)


def test_gae_truncation_bootstraps_but_termination_does_not():
    # one step, the same data: truncated keeps gamma * V(final obs), terminated drops it
    r, v, nv = (torch.tensor([x], dtype=F64) for x in (1.0, 0.5, 10.0))
    yes, no = torch.tensor([True]), torch.tensor([False])
    a_trunc, _ = gae(r, v, nv, no, yes, 0.9, 0.95)
    a_term, _ = gae(r, v, nv, yes, no, 0.9, 0.95)
    torch.testing.assert_close(a_trunc, torch.tensor([1.0 + 9.0 - 0.5], dtype=F64))
    torch.testing.assert_close(a_term, torch.tensor([1.0 - 0.5], dtype=F64))


def test_gae_lambda_one_is_discounted_return_minus_value():
    T, N, gamma = 10, 3, 0.95
    gen = torch.Generator().manual_seed(2)
    rewards, V = randn(gen, T, N), randn(gen, T + 1, N)  # V(s_0) ... V(s_T)
    terminated = torch.zeros(T, N, dtype=torch.bool)
    terminated[4, 0] = terminated[6, 1] = True
    truncated = torch.zeros(T, N, dtype=torch.bool)
    truncated[3, 2] = True  # column 2 has a truncation: the identity does not hold there
    values = V[:-1]
    next_values = torch.where(terminated, torch.full_like(V[1:], 100.0), V[1:])  # unused after a termination
    adv, ret = gae(rewards, values, next_values, terminated, truncated, gamma, 1.0)
    G = discounted_returns(rewards, gamma, terminated, last_value=V[-1])
    torch.testing.assert_close(adv[:, :2], (G - values)[:, :2])
    torch.testing.assert_close(ret[:, :2], G[:, :2])
    assert not torch.allclose(adv[:, 2], (G - values)[:, 2])


def test_gae_lambda_zero_is_the_td_error():
    rewards, values, next_values, terminated, truncated = rollout()
    adv, _ = gae(rewards, values, next_values, terminated, truncated, 0.9, 0.0)
    delta = rewards + 0.9 * (~terminated).double() * next_values - values
    torch.testing.assert_close(adv, delta)


# ---------------------------------------------------------------- normalize


def test_normalize_against_numpy():
    gen = torch.Generator().manual_seed(3)
    x = 3.0 + 5.0 * randn(gen, 7, 3)
    y = normalize(x)
    xn = x.numpy()
    np.testing.assert_allclose(y.numpy(), (xn - xn.mean()) / (xn.std(ddof=1) + 1e-8), rtol=1e-12, atol=1e-12)
    assert abs(y.mean().item()) < 1e-12
    assert abs(y.std().item() - 1.0) < 1e-8  # torch.std is unbiased by default


def test_normalize_constant_batch_is_zero_not_nan():
    assert torch.equal(normalize(torch.full((4,), 2.0, dtype=F64)), torch.zeros(4, dtype=F64))


# ---------------------------------------------------------------- group_relative


def group_loop(rows, eps, scale, leave_one_out):
    out = []
    for g in rows:
        sd = statistics.stdev(g)  # unbiased, like torch.std
        row = []
        for i, r in enumerate(g):
            others = g[:i] + g[i + 1 :]
            baseline = statistics.mean(others) if leave_one_out else statistics.mean(g)
            row.append((r - baseline) / (sd + eps) if scale else r - baseline)
        out.append(row)
    return out


@pytest.mark.parametrize("scale", [True, False])
@pytest.mark.parametrize("leave_one_out", [False, True])
def test_group_relative_against_loop(scale, leave_one_out):
    gen = torch.Generator().manual_seed(4)
    rewards = randn(gen, 5, 6)
    out = group_relative(rewards, eps=1e-4, scale=scale, leave_one_out=leave_one_out)
    expected = group_loop(rewards.tolist(), 1e-4, scale, leave_one_out)
    torch.testing.assert_close(out, torch.tensor(expected, dtype=F64))


def test_group_relative_leading_dims_and_binary_rewards():
    rewards = torch.tensor([[[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]]], dtype=F64)  # (1, 2, G=4)
    out = group_relative(rewards, scale=False)
    torch.testing.assert_close(out, torch.tensor([[[0.5, -0.5, -0.5, 0.5], [0.25, 0.25, 0.25, -0.75]]], dtype=F64))


@pytest.mark.parametrize("leave_one_out", [False, True])
def test_group_relative_zero_variance_group_gives_zeros(leave_one_out):
    rewards = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 1.0]], dtype=F64)
    out = group_relative(rewards, leave_one_out=leave_one_out)
    assert not torch.isnan(out).any()
    assert torch.equal(out[:2], torch.zeros(2, 4, dtype=F64))
    assert (out[2].abs() > 0.5).all()


# ---------------------------------------------------------------- numerical safety
# Inputs from bug reports (TRL, SB3, verl, OpenRLHF): what lies beyond a termination must not leak in
# through 0 * nan, and equal values must give exactly 0, not a rounding residue divided by a tiny std.

NAN, INF = float("nan"), float("inf")


def test_td_target_nan_next_value_is_cut_by_the_termination():
    out = td_target(torch.tensor([1.0]), torch.tensor([NAN]), torch.tensor([1.0]), 0.9)
    assert out.tolist() == [1.0]
    out = td_target(torch.tensor([1.0, 2.0]), torch.tensor([INF, -INF]), torch.tensor([True, True]), 0.9)
    assert out.tolist() == [1.0, 2.0]
    # gamma = 0: the next value has no weight at all
    assert td_target(torch.tensor([1.0]), torch.tensor([NAN]), torch.tensor([0.0]), 0.0).tolist() == [1.0]


def test_gae_nan_beyond_a_termination_does_not_leak():
    # gae(rewards, values, next_values, terminated, truncated, gamma, lam): step 1 is another episode
    adv, ret = gae(torch.tensor([1.0, NAN]), torch.zeros(2), torch.zeros(2), torch.tensor([1.0, 0.0]),
                   torch.zeros(2), 0.9, 0.9)
    assert adv[0].item() == 1.0 and ret[0].item() == 1.0
    rewards, zeros = torch.tensor([1.0, NAN]), torch.zeros(2)
    # NaN / inf value of a terminal next state, and a NaN episode after a truncation
    adv, _ = gae(rewards, zeros, torch.tensor([INF, 0.0]), torch.tensor([1.0, 0.0]), zeros, 0.9, 0.9)
    assert adv[0].item() == 1.0
    adv, _ = gae(rewards, zeros, torch.tensor([2.0, 0.0]), zeros, torch.tensor([1.0, 0.0]), 0.9, 0.9)
    assert adv[0].item() == pytest.approx(1.0 + 0.9 * 2.0)
    # lam = 0: A_t is the TD error, whatever comes after it
    adv, _ = gae(rewards, zeros, torch.full((2,), 2.0), zeros, zeros, 0.9, 0.0)
    assert adv[0].item() == pytest.approx(1.0 + 0.9 * 2.0)


def test_discounted_returns_nan_and_inf_beyond_a_termination_and_nan_last_value():
    terminated = torch.tensor([0.0, 1.0, 0.0])
    for bad in (NAN, INF, -INF):
        out = discounted_returns(torch.tensor([1.0, 2.0, bad]), 0.9, terminated)
        assert out[:2].tolist() == pytest.approx([1.0 + 0.9 * 2.0, 2.0])
    # the last step is terminated: the bootstrap last_value is never used, even if NaN
    out = discounted_returns(torch.tensor([1.0, 2.0]), 0.9, torch.tensor([0.0, 1.0]), last_value=NAN)
    assert out.tolist() == pytest.approx([1.0 + 0.9 * 2.0, 2.0])
    out = discounted_returns(torch.ones(2, 2), 0.5, torch.tensor([[0.0, 0.0], [1.0, 0.0]]),
                             last_value=torch.tensor([NAN, 4.0]))  # env 0 ended: its NaN bootstrap is cut
    assert out.tolist() == [[1.5, 2.5], [1.0, 3.0]]


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_normalize_constant_batch_is_exactly_zero_not_a_rounding_residue(dtype):
    # float32: the mean of seven 0.35 is off by an ulp, and (x - mean) / (std + 1e-8) gave 0.7064 everywhere
    x = torch.full((7,), 0.35, dtype=dtype)
    assert torch.equal(normalize(x), torch.zeros(7, dtype=dtype))
    for c in (0.1, 0.7, -3.3, 1e6, 1e-6):
        assert torch.equal(normalize(torch.full((33,), c, dtype=dtype)), torch.zeros(33, dtype=dtype))
    # equal up to rounding (0.1 + 0.2 vs 0.3: one ulp apart) is no spread either
    y = torch.tensor([0.3] * 5, dtype=dtype)
    y[2] = torch.nextafter(y[2], torch.tensor(1.0, dtype=dtype))
    assert torch.equal(normalize(y), torch.zeros(5, dtype=dtype))


def test_normalize_small_but_real_spread_is_unchanged():
    x = 0.35 + 1e-4 * torch.tensor([-1.0, 0.0, 1.0, 2.0], dtype=torch.float32)  # ~1000 ulps of spread
    assert torch.equal(normalize(x), (x - x.mean()) / (x.std() + 1e-8))
    assert normalize(x).std().item() == pytest.approx(1.0, rel=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("scale", [True, False])
@pytest.mark.parametrize("leave_one_out", [False, True])
def test_group_relative_equal_rewards_give_exactly_zero(dtype, scale, leave_one_out):
    for shape in ((2, 8), (3, 7), (4, 3)):
        rewards = torch.full(shape, 0.35, dtype=dtype)
        out = group_relative(rewards, scale=scale, leave_one_out=leave_one_out)
        assert torch.equal(out, torch.zeros(shape, dtype=dtype)), shape
    # a constant group next to a real one: the real one is computed as before
    rewards = torch.tensor([[0.35] * 4, [0.0, 1.0, 0.0, 1.0]], dtype=dtype)
    out = group_relative(rewards, scale=scale, leave_one_out=leave_one_out)
    assert torch.equal(out[0], torch.zeros(4, dtype=dtype))
    expected = group_loop([[0.0, 1.0, 0.0, 1.0]], 1e-4, scale, leave_one_out)[0]
    torch.testing.assert_close(out[1], torch.tensor(expected, dtype=dtype))


# ---------------------------------------------------------------- bad arguments


def test_errors_gamma_and_lam():
    r = torch.zeros(5)
    for gamma in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="discounted_returns: gamma must be in \\[0, 1\\]"):
            discounted_returns(r, gamma)
        with pytest.raises(ValueError, match="td_target: gamma"):
            td_target(r, r, r, gamma)
        with pytest.raises(ValueError, match="gae: gamma"):
            gae(r, r, r, r, r, gamma, 0.95)
    with pytest.raises(ValueError, match="gae: lam must be in \\[0, 1\\]"):
        gae(r, r, r, r, r, 0.99, 1.01)


def test_errors_shapes():
    a, b = torch.zeros(5, 2), torch.zeros(5)
    with pytest.raises(ValueError, match=r"gae: rewards \(5, 2\) and values \(5,\) differ in shape"):
        gae(a, b, a, a, a, 0.99, 0.95)
    with pytest.raises(ValueError, match=r"gae: rewards \(5, 2\) and truncated \(5,\) differ in shape"):
        gae(a, a, a, a, b, 0.99, 0.95)
    with pytest.raises(ValueError, match=r"td_target: rewards \(5, 2\) and next_values \(5,\)"):
        td_target(a, b, a, 0.9)
    with pytest.raises(ValueError, match=r"discounted_returns: rewards \(5, 2\) and terminated \(5,\)"):
        discounted_returns(a, 0.9, b)
    with pytest.raises(ValueError, match="discounted_returns: last_value"):
        discounted_returns(a, 0.9, last_value=torch.zeros(3))
    with pytest.raises(ValueError, match="gae: terminated must hold only 0/1"):
        gae(b, b, b, torch.full((5,), 0.5), b, 0.99, 0.95)


def test_errors_normalize_and_groups():
    with pytest.raises(ValueError, match="normalize: eps must be > 0"):
        normalize(torch.zeros(4), eps=0.0)
    with pytest.raises(ValueError, match="normalize: x needs at least 2 elements"):
        normalize(torch.zeros(1))
    with pytest.raises(ValueError, match="group_relative: .*G >= 2.*\\(3, 1\\)"):
        group_relative(torch.zeros(3, 1))
    with pytest.raises(ValueError, match="group_relative: eps must be > 0"):
        group_relative(torch.zeros(3, 4), eps=-1e-4)
