"""rlnotes.objectives against hand formulas, explicit loops and autograd."""

import math

import pytest
import torch

from rlnotes.objectives import aggregate, clipped_surrogate, explained_variance, pg_loss, probability_ratio, value_loss

F64 = torch.float64


def t(values, grad=False):
    return torch.tensor(values, dtype=F64, requires_grad=grad)


# ---------------------------------------------------------------- pg_loss


def test_pg_loss_value_gradient_and_detached_advantages():
    logp, adv = t([-0.5, -1.0, -2.0], grad=True), t([1.0, -2.0, 0.5], grad=True)
    loss = pg_loss(logp, adv)
    # -(( -0.5*1) + (-1*-2) + (-2*0.5)) / 3 = -(-0.5 + 2 - 1)/3 = -0.5/3
    assert loss.item() == pytest.approx(-0.5 / 3, abs=1e-15)
    loss.backward()
    torch.testing.assert_close(logp.grad, t([-1.0, 2.0, -0.5]) / 3)
    assert adv.grad is None  # the advantage weighs the gradient; it gets none itself


def test_pg_loss_per_sequence_advantage_over_tokens():
    logp = t([[-1.0, -2.0], [-3.0, -4.0]])
    adv = t([[1.0], [2.0]])  # (B, 1) over (B, L)
    assert pg_loss(logp, adv).item() == pytest.approx(-(-1 - 2 - 6 - 8) / 4)
    with pytest.raises(ValueError, match=r"pg_loss: advantages \(2,\) does not broadcast to logp \(2, 3\)"):
        pg_loss(torch.zeros(2, 3), torch.zeros(2))


# ---------------------------------------------------------------- clipped_surrogate


def surrogate_by_hand(r, A, eps, eps_high):
    clipped_r = min(max(r, 1 - eps), 1 + eps_high)
    return -min(r * A, clipped_r * A)


RATIOS = [0.5, 0.7, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0]


@pytest.mark.parametrize("eps, eps_high", [(0.2, None), (0.2, 0.28), (0.1, 0.3)])
def test_clipped_surrogate_values(eps, eps_high):
    ratios = RATIOS * 2
    advs = [1.5] * len(RATIOS) + [-0.7] * len(RATIOS)
    old_logp = t([-1.0 - 0.1 * i for i in range(len(ratios))])
    logp = old_logp + t([math.log(r) for r in ratios])
    loss = clipped_surrogate(logp, old_logp, t(advs), eps=eps, eps_high=eps_high)
    high = eps if eps_high is None else eps_high
    expected = [surrogate_by_hand(r, a, eps, high) for r, a in zip(ratios, advs)]
    torch.testing.assert_close(loss, t(expected))


@pytest.mark.parametrize("eps_high", [None, 0.3])
def test_clipped_surrogate_gradient_zero_exactly_where_clipped(eps_high):
    eps = 0.2
    high = eps if eps_high is None else eps_high
    ratios = RATIOS * 2
    advs = [2.0] * len(RATIOS) + [-3.0] * len(RATIOS)
    old_logp = t([-2.0] * len(ratios), grad=True)
    logp = (old_logp.detach() + t([math.log(r) for r in ratios])).requires_grad_()
    clipped_surrogate(logp, old_logp, t(advs), eps=eps, eps_high=eps_high).sum().backward()
    n_clipped = 0
    for i, (r, A) in enumerate(zip(ratios, advs)):
        clipped = (r > 1 + high and A > 0) or (r < 1 - eps and A < 0)
        n_clipped += clipped
        if clipped:
            assert logp.grad[i].item() == 0.0, (r, A)
        else:  # d/dlogp of -r*A with r = exp(logp - old_logp)
            assert logp.grad[i].item() == pytest.approx(-A * r, rel=1e-12), (r, A)
    assert n_clipped == (5 if eps_high is None else 4)  # both sides of the clip are exercised
    assert old_logp.grad is None  # the old policy is data: detached


def test_clipped_surrogate_clip_higher_lets_a_positive_advantage_grow():
    # r = 1.25, A = 1: symmetric eps = 0.2 clips (loss -1.2, no gradient); eps_high = 0.28 does not (-1.25)
    logp = t([math.log(1.25)], grad=True)
    old = t([0.0])
    sym = clipped_surrogate(logp, old, t([1.0]), eps=0.2)
    assert sym.item() == pytest.approx(-1.2)
    asym = clipped_surrogate(logp, old, t([1.0]), eps=0.2, eps_high=0.28)
    assert asym.item() == pytest.approx(-1.25)
    (g,) = torch.autograd.grad(asym.sum(), logp)
    assert g.item() == pytest.approx(-1.25)


def test_clipped_surrogate_per_token_shapes():
    logp = torch.zeros(3, 4, dtype=F64)
    out = clipped_surrogate(logp, logp, t([[1.0], [2.0], [-1.0]]))
    torch.testing.assert_close(out, -t([[1.0], [2.0], [-1.0]]).expand(3, 4))
    with pytest.raises(ValueError, match=r"clipped_surrogate: logp \(3, 4\) and old_logp \(3,\) differ in shape"):
        clipped_surrogate(logp, torch.zeros(3), torch.zeros(3, 1))
    with pytest.raises(ValueError, match=r"clipped_surrogate: advantages \(3,\) does not broadcast to logp \(3, 4\)"):
        clipped_surrogate(logp, logp, torch.zeros(3))


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_clipped_surrogate_and_pg_loss_finite_at_extreme_logprobs(dtype):
    vals = [-1e4, -1.0, 0.0, 1e4]
    lp, olp = torch.meshgrid(torch.tensor(vals, dtype=dtype), torch.tensor(vals, dtype=dtype), indexing="ij")
    lp, olp = lp.reshape(-1, 1).expand(-1, 3), olp.reshape(-1, 1).expand(-1, 3)
    adv = torch.tensor([[-1.0, 0.0, 1.0]], dtype=dtype).expand_as(lp)
    logp = lp.clone().requires_grad_()
    loss = clipped_surrogate(logp, olp, adv)
    (g,) = torch.autograd.grad(loss.sum(), logp)
    assert torch.isfinite(loss).all() and torch.isfinite(g).all()
    logp = lp.clone().requires_grad_()
    (g,) = torch.autograd.grad(pg_loss(logp, adv), logp)
    assert torch.isfinite(g).all()


# ---------------------------------------------------------------- value_loss

# v, old, R and clip 0.2, worked by hand:
#   v - old        = [0.1, -0.5, 1.0, -0.5]  -> clamp -> [0.1, -0.2, 0.2, -0.2]
#   v_clip         = [1.0,  2.3, 2.2,  0.3]
#   (v - R)^2      = [0.25, 1.0, 0.0,  4.0]      mean * 0.5 = 0.5 * 5.25 / 4 = 0.65625
#   (v_clip - R)^2 = [0.25, 1.69, 0.64, 2.89]
#   max            = [0.25, 1.69, 0.64, 4.0]     mean * 0.5 = 0.5 * 6.58 / 4 = 0.8225
V, OLD, R = [1.0, 2.0, 3.0, 0.0], [0.9, 2.5, 2.0, 0.5], [1.5, 1.0, 3.0, 2.0]


def test_value_loss_unclipped_and_clipped_by_hand():
    assert value_loss(t(V), t(R)).item() == pytest.approx(0.65625)
    assert value_loss(t(V), t(R), old_values=t(OLD)).item() == pytest.approx(0.65625)  # no clip: ignored
    assert value_loss(t(V), t(R), old_values=t(OLD), clip=0.2).item() == pytest.approx(0.8225)
    assert value_loss(t(V), t(R), old_values=t(OLD), clip=10.0).item() == pytest.approx(0.65625)


def test_value_loss_gradient_zero_where_clipped_term_dominates():
    v = t(V, grad=True)
    value_loss(v, t(R), old_values=t(OLD), clip=0.2).backward()
    # d/dv 0.5 * mean((v - R)^2) = (v - R) / 4 where the unclipped error is kept; 0 where the clipped one is
    torch.testing.assert_close(v.grad, t([(1.0 - 1.5) / 4, 0.0, 0.0, (0.0 - 2.0) / 4]))


def test_value_loss_errors():
    with pytest.raises(ValueError, match=r"value_loss: values \(4, 1\) and returns \(4,\) differ in shape"):
        value_loss(torch.zeros(4, 1), torch.zeros(4))
    with pytest.raises(ValueError, match="value_loss: clip must be > 0"):
        value_loss(t(V), t(R), old_values=t(OLD), clip=0.0)
    with pytest.raises(ValueError, match="value_loss: clip needs old_values"):
        value_loss(t(V), t(R), clip=0.2)


# ---------------------------------------------------------------- aggregate


def ragged():
    gen = torch.Generator().manual_seed(5)
    loss = torch.randn(3, 5, generator=gen, dtype=F64) + 1.0
    lengths = [5, 2, 3]
    mask = torch.tensor([[i < n for i in range(5)] for n in lengths])
    return loss, mask, lengths


def test_aggregate_three_modes_against_loops():
    loss, mask, lengths = ragged()
    rows = loss.tolist()
    per_seq = [sum(rows[b][:n]) / n for b, n in enumerate(lengths)]
    total = sum(sum(rows[b][:n]) for b, n in enumerate(lengths))
    expected = {
        "grpo": sum(per_seq) / 3,
        "dapo": total / sum(lengths),
        "dr_grpo": total / (3 * 5),
    }
    got = {mode: aggregate(loss, mask, mode=mode).item() for mode in expected}
    for mode in expected:
        assert got[mode] == pytest.approx(expected[mode], rel=1e-12), mode
        assert aggregate(loss, mask.double(), mode=mode).item() == pytest.approx(expected[mode], rel=1e-12)
    assert aggregate(loss, mask, mode="dr_grpo", max_len=8).item() == pytest.approx(total / (3 * 8), rel=1e-12)
    # the three choices really differ on ragged lengths
    values = sorted(got.values())
    assert values[1] - values[0] > 1e-3 and values[2] - values[1] > 1e-3


def test_aggregate_ignores_masked_tokens_and_empty_sequences():
    loss, mask, _ = ragged()
    garbage = torch.where(mask, loss, torch.full_like(loss, 1e6))
    for mode in ("grpo", "dapo", "dr_grpo"):
        assert aggregate(garbage, mask, mode=mode).item() == pytest.approx(aggregate(loss, mask, mode=mode).item())
    mask[1] = False  # a fully masked sequence counts 0 in grpo (token count clamped to 1, as in TRL), not NaN
    rows = loss.tolist()
    assert aggregate(loss, mask, mode="grpo").item() == pytest.approx((sum(rows[0]) / 5 + sum(rows[2][:3]) / 3) / 3)


def test_aggregate_errors():
    loss, mask, _ = ragged()
    with pytest.raises(ValueError, match="aggregate: mode must be one of 'grpo', 'dapo', 'dr_grpo', got 'mean'"):
        aggregate(loss, mask, mode="mean")
    with pytest.raises(ValueError, match=r"aggregate: per_token_loss \(3, 5\) and mask \(3, 4\) differ in shape"):
        aggregate(loss, mask[:, :4])
    with pytest.raises(ValueError, match="aggregate: max_len must be > 0"):
        aggregate(loss, mask, mode="dr_grpo", max_len=0)


# ---------------------------------------------------------------- numerical safety
# Inputs from bug reports (TRL, verl, OpenRLHF, SB3): a masked token's NaN / inf must not leak in through 0 * nan.

NAN, INF = float("nan"), float("inf")


def test_aggregate_nan_at_a_masked_token_is_ignored():
    loss, mask = torch.tensor([[2.0, NAN], [10.0, 3.0]]), torch.tensor([[1, 0], [1, 0]])
    assert aggregate(loss, mask, mode="grpo").item() == 6.0  # (2 / 1 + 10 / 1) / 2
    assert aggregate(loss, mask, mode="dapo").item() == 6.0  # (2 + 10) / 2 tokens
    assert aggregate(loss, mask, mode="dr_grpo").item() == 3.0  # (2 + 10) / (2 * 2)
    for bad in (INF, -INF):
        loss_bad = torch.tensor([[2.0, bad], [10.0, 3.0]])
        assert aggregate(loss_bad, mask.bool(), mode="grpo").item() == 6.0
    # and no NaN flows back into the gradient of the loss
    loss = torch.tensor([[2.0, NAN], [10.0, 3.0]], requires_grad=True)
    (g,) = torch.autograd.grad(aggregate(loss, mask, mode="grpo"), loss)
    assert g.tolist() == [[0.5, 0.0], [0.5, 0.0]]


def test_clipped_surrogate_masked_minus_inf_logprobs_give_finite_loss_and_gradient():
    # padding scored -inf by both policies: ratio exp(-inf + inf) was NaN, and 0 * nan leaked into the gradient
    assert probability_ratio(torch.tensor([-INF]), torch.tensor([-INF])).tolist() == [1.0]
    assert probability_ratio(torch.tensor([-INF]), torch.tensor([-1.0])).tolist() == [0.0]
    logp = torch.tensor([[-0.5, -1.0, -INF], [-2.0, -INF, -INF]], dtype=F64, requires_grad=True)
    old_logp = torch.tensor([[-0.6, -1.0, -INF], [-2.0, -INF, -INF]], dtype=F64)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    per_token = clipped_surrogate(logp, old_logp, torch.tensor([[1.0], [-1.0]], dtype=F64))
    loss = aggregate(per_token, mask, mode="grpo")
    (g,) = torch.autograd.grad(loss, logp)
    ratio = math.exp(0.1)
    assert loss.item() == pytest.approx((-ratio - 1.0) / 2 / 2 + 1.0 / 2)
    assert torch.isfinite(g).all() and (g[mask == 0] == 0).all()
    # where the log-probs are equal and finite (PPO's first epoch) the gradient is still r * A
    x = torch.tensor([-1.0, -1.0], dtype=F64, requires_grad=True)
    (g,) = torch.autograd.grad(clipped_surrogate(x, x.detach(), torch.tensor([2.0, -3.0], dtype=F64)).sum(), x)
    assert g.tolist() == [-2.0, 3.0]


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_explained_variance_of_returns_equal_up_to_rounding_is_nan(dtype):
    # float32 returns all 0.35 have a variance of ~1e-15, not 0: 1 - var / var_returns gave about -1e15
    returns = torch.full((7,), 0.35, dtype=dtype)
    values = torch.linspace(0.0, 1.0, 7, dtype=dtype)
    assert math.isnan(explained_variance(values, returns).item())
    # a small but real spread is still measured
    returns = 0.35 + 1e-3 * torch.arange(7, dtype=dtype)
    assert explained_variance(returns, returns).item() == pytest.approx(1.0)


def test_errors_eps():
    z = torch.zeros(3)
    with pytest.raises(ValueError, match="clipped_surrogate: eps must be > 0, got 0.0"):
        clipped_surrogate(z, z, z, eps=0.0)
    with pytest.raises(ValueError, match="clipped_surrogate: eps_high must be > 0"):
        clipped_surrogate(z, z, z, eps=0.2, eps_high=-0.1)
