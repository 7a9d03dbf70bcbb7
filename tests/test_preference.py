"""rlnotes.preference against cases worked by hand (math.log / math.exp, never the package) and autograd."""

import math

import pytest
import torch

from rlnotes.preference import bradley_terry, dpo_loss, kto_loss, reward_model_loss

F64 = torch.float64


def t(values, grad=False):
    return torch.tensor(values, dtype=F64, requires_grad=grad)


def softplus_neg(x):
    """-logsigmoid(x) = log(1 + e^-x), by hand."""
    return math.log(1 + math.exp(-x))


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


# ---------------------------------------------------------------- Bradley-Terry and the reward model


def test_bradley_terry_by_hand_and_symmetric():
    # r_c = log 3, r_r = 0: sigmoid(log 3) = 3 / (3 + 1) = 0.75 ; equal rewards: a coin flip
    p = bradley_terry(t([math.log(3.0), 1.0]), t([0.0, 1.0]))
    torch.testing.assert_close(p, t([0.75, 0.5]))
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(100, generator=g, dtype=F64), torch.randn(100, generator=g, dtype=F64)
    torch.testing.assert_close(bradley_terry(a, b) + bradley_terry(b, a), torch.ones(100, dtype=F64))


def test_reward_model_loss_with_margin_by_hand():
    # gap 2 - 1 = 1 ; with margin 0.5: -logsigmoid(0.5) = log(1 + e^-0.5)
    rc, rr = t([2.0, 2.0]), t([1.0, 1.0])
    torch.testing.assert_close(reward_model_loss(rc, rr), t([softplus_neg(1.0)] * 2))
    torch.testing.assert_close(reward_model_loss(rc, rr, margin=0.5), t([0.4740769841801067] * 2))
    per_pair = reward_model_loss(rc, rr, margin=t([0.0, 0.5]))
    torch.testing.assert_close(per_pair, t([0.31326168751822286, 0.4740769841801067]))
    # it is the negative log of the Bradley-Terry probability
    torch.testing.assert_close(reward_model_loss(rc, rr), -torch.log(bradley_terry(rc, rr)))


# ---------------------------------------------------------------- DPO family
# Two pairs, beta = 0.1.
#   pair 0: pc=-1, pr=-2, rc=-1.5, rr=-1.5: logits = (-1 - -2) - (-1.5 - -1.5) = 1 - 0 = 1,   beta*logits =  0.1
#   pair 1: pc=-3, pr=-1, rc=-2,   rr=-2:   logits = (-3 - -1) - (-2 - -2)     = -2 - 0 = -2, beta*logits = -0.2
PC, PR, RC, RR = [-1.0, -3.0], [-2.0, -1.0], [-1.5, -2.0], [-1.5, -2.0]
BETA_LOGITS = [0.1, -0.2]


def dpo(loss_type, ls=0.0, beta=0.1):
    return dpo_loss(t(PC), t(PR), t(RC), t(RR), beta=beta, loss_type=loss_type, label_smoothing=ls)


def test_dpo_sigmoid_by_hand():
    losses, chosen, rejected = dpo("sigmoid")
    # -logsigmoid(0.1) = log(1 + e^-0.1) = 0.64439666... ; -logsigmoid(-0.2) = log(1 + e^0.2) = 0.79813886...
    expected = [softplus_neg(x) for x in BETA_LOGITS]
    torch.testing.assert_close(losses, t(expected))
    torch.testing.assert_close(losses, t([0.6443966600735709, 0.7981388693815917]))
    # implicit rewards beta * (policy - ref): chosen 0.1*(-1 - -1.5) = 0.05, 0.1*(-3 - -2) = -0.1 ;
    # rejected 0.1*(-2 - -1.5) = -0.05, 0.1*(-1 - -2) = 0.1
    torch.testing.assert_close(chosen, t([0.05, -0.1]))
    torch.testing.assert_close(rejected, t([-0.05, 0.1]))


def test_dpo_sigmoid_label_smoothing_by_hand():
    # cDPO, ls = 0.1: 0.9 * log(1 + e^-x) + 0.1 * log(1 + e^x)
    losses, _, _ = dpo("sigmoid", ls=0.1)
    expected = [0.9 * softplus_neg(x) + 0.1 * softplus_neg(-x) for x in BETA_LOGITS]
    torch.testing.assert_close(losses, t(expected))
    torch.testing.assert_close(losses, t([0.6543966600735709, 0.7781388693815917]))


def test_dpo_hinge_and_ipo_by_hand():
    hinge, _, _ = dpo("hinge")
    torch.testing.assert_close(hinge, t([0.9, 1.2]))  # relu(1 - 0.1), relu(1 + 0.2)
    ipo, _, _ = dpo("ipo")
    torch.testing.assert_close(ipo, t([16.0, 49.0]))  # (1 - 1/0.2)^2 = (-4)^2, (-2 - 5)^2 = (-7)^2
    # hinge and ipo ignore label smoothing, as in TRL
    torch.testing.assert_close(dpo("hinge", ls=0.3)[0], hinge)
    torch.testing.assert_close(dpo("ipo", ls=0.3)[0], ipo)


def test_dpo_robust_by_hand():
    # rDPO, ls = 0.1: (0.9 * log(1 + e^-x) - 0.1 * log(1 + e^x)) / (1 - 0.2)
    losses, _, _ = dpo("robust", ls=0.1)
    expected = [(0.9 * softplus_neg(x) - 0.1 * softplus_neg(-x)) / 0.8 for x in BETA_LOGITS]
    torch.testing.assert_close(losses, t(expected))
    torch.testing.assert_close(losses, t([0.6318966600735709, 0.8231388693815918]))
    torch.testing.assert_close(dpo("robust")[0], dpo("sigmoid")[0])  # ls = 0: plain DPO


def test_dpo_sigmoid_gradient_closed_form():
    g = torch.Generator().manual_seed(1)
    pc, pr, rc, rr = (torch.randn(6, generator=g, dtype=F64) * 3 for _ in range(4))
    pc.requires_grad_()
    beta = 0.3
    losses, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=beta)
    (grad,) = torch.autograd.grad(losses.sum(), pc)
    logits = (pc - pr) - (rc - rr)
    torch.testing.assert_close(grad, (-beta * torch.sigmoid(-beta * logits)).detach())
    assert not chosen.requires_grad and not rejected.requires_grad  # logging only


# ---------------------------------------------------------------- KTO


def test_kto_by_hand():
    # beta 0.1, kl 0.5 -> z = 0.5
    #   desirable:   logratio = -1 - -2 = 1:   1 - sigmoid(0.1 * (1 - 0.5))            = 1 - sigmoid(0.05)
    #   undesirable: logratio = -3 - -2 = -1:  1.5 * (1 - sigmoid(0.1 * (0.5 - -1)))   = 1.5 * (1 - sigmoid(0.15))
    policy, ref = t([-1.0, -3.0]), t([-2.0, -2.0])
    desirable = torch.tensor([True, False])
    loss = kto_loss(policy, ref, desirable, kl=0.5, beta=0.1, undesirable_weight=1.5)
    torch.testing.assert_close(loss, t([1 - sigmoid(0.05), 1.5 * (1 - sigmoid(0.15))]))
    torch.testing.assert_close(loss, t([0.48750260351578967, 0.6938552319843756]))
    # float labels, desirable_weight, and a negative kl clamped to z = 0: both become 1 - sigmoid(0.1)
    loss = kto_loss(policy, ref, t([1.0, 0.0]), kl=t(-0.3), beta=0.1, desirable_weight=2.0)
    torch.testing.assert_close(loss, t([2 * (1 - sigmoid(0.1)), 1 - sigmoid(0.1)]))


def test_kto_reference_point_gets_no_gradient():
    policy, kl = t([-1.0, -3.0], grad=True), t(0.5, grad=True)
    loss = kto_loss(policy, t([-2.0, -2.0]), torch.tensor([True, False]), kl=kl)
    loss.sum().backward()
    assert kl.grad is None
    # d/dlogratio of 1 - sigmoid(beta*(lr - z)) = -beta * s * (1 - s)
    s0, s1 = sigmoid(0.1 * 0.5), sigmoid(0.1 * 1.5)
    torch.testing.assert_close(policy.grad, t([-0.1 * s0 * (1 - s0), 0.1 * s1 * (1 - s1)]))


# ---------------------------------------------------------------- extremes and bad arguments


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_finite_at_extreme_logprobs(dtype):
    big = torch.tensor([1e4, -1e4, 0.0, 1e4, -1e4], dtype=dtype)
    others = [big, big.flip(0), big.roll(1), -big]
    for loss_type in ("sigmoid", "hinge", "ipo", "robust"):
        pc = others[0].clone().requires_grad_()
        losses, chosen, rejected = dpo_loss(pc, *others[1:], beta=0.1, loss_type=loss_type, label_smoothing=0.1)
        (g,) = torch.autograd.grad(losses.sum(), pc)
        for x in (losses, chosen, rejected, g):
            assert torch.isfinite(x).all(), loss_type
    desirable = torch.tensor([True, False, True, False, True])
    pol = big.clone().requires_grad_()
    k = kto_loss(pol, big.flip(0), desirable, kl=torch.tensor(1e4, dtype=dtype))
    (g,) = torch.autograd.grad(k.sum(), pol)
    assert torch.isfinite(k).all() and torch.isfinite(g).all()
    assert torch.isfinite(reward_model_loss(big, -big, margin=1e4)).all()
    assert torch.isfinite(bradley_terry(big, -big)).all()


def test_dpo_zero_weight_term_does_not_turn_an_infinite_logit_into_nan():
    # a rejected answer of probability 0 under the policy: logits = +inf. Without label smoothing the
    # loss is -logsigmoid(+inf) = 0; the unused term was logsigmoid(-inf) * 0 = NaN
    inf = float("inf")
    pc, pr, rc, rr = t([-1.0]), t([-inf]), t([-1.0]), t([-2.0])
    for loss_type in ("sigmoid", "robust", "hinge"):
        losses, _, _ = dpo_loss(pc, pr, rc, rr, loss_type=loss_type)
        assert losses.item() == 0.0, loss_type
    # and the chosen answer of probability 0: logits = -inf, an infinite loss, not NaN
    for loss_type in ("sigmoid", "robust", "hinge", "ipo"):
        losses, _, _ = dpo_loss(t([-inf]), t([-1.0]), rc, rr, loss_type=loss_type)
        assert losses.item() == inf, loss_type
    # label_smoothing = 1 (sigmoid): labels all flipped, so logits = -inf is a perfect 0
    losses, _, _ = dpo_loss(t([-inf]), t([-1.0]), rc, rr, loss_type="sigmoid", label_smoothing=1.0)
    assert losses.item() == 0.0
    # finite logits: the same numbers as the two-term formula
    logits = t([0.3, -2.0, 5.0])
    z = torch.zeros(3, dtype=F64)
    losses, _, _ = dpo_loss(logits, z, z, z, beta=0.5, loss_type="sigmoid", label_smoothing=0.2)
    expected = [softplus_neg(0.5 * x) * 0.8 + softplus_neg(-0.5 * x) * 0.2 for x in logits.tolist()]
    assert losses.tolist() == pytest.approx(expected, rel=1e-12)


def test_dpo_errors():
    z = torch.zeros(2)
    with pytest.raises(ValueError, match="dpo_loss: beta must be > 0"):
        dpo_loss(z, z, z, z, beta=0.0)
    with pytest.raises(ValueError, match="dpo_loss: loss_type must be one of 'sigmoid', 'hinge', 'ipo', 'robust'"):
        dpo_loss(z, z, z, z, loss_type="kto_pair")
    with pytest.raises(ValueError, match=r"dpo_loss: label_smoothing must be in \[0, 0.5\) for loss_type 'robust'"):
        dpo_loss(z, z, z, z, loss_type="robust", label_smoothing=0.5)
    with pytest.raises(ValueError, match=r"dpo_loss: label_smoothing must be in \[0, 1\]"):
        dpo_loss(z, z, z, z, label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"dpo_loss: label_smoothing must be in \[0, 1\]"):
        dpo_loss(z, z, z, z, loss_type="hinge", label_smoothing=-0.1)
    losses, _, _ = dpo_loss(z, z, z, z, label_smoothing=0.7)  # allowed for sigmoid (a deliberately flipped prior)
    assert torch.isfinite(losses).all()
    with pytest.raises(ValueError, match=r"dpo_loss: policy_chosen \(2,\) and ref_rejected \(3,\) differ in shape"):
        dpo_loss(z, z, z, torch.zeros(3))


def test_kto_and_reward_errors():
    z = torch.zeros(2)
    d = torch.tensor([True, False])
    with pytest.raises(ValueError, match="kto_loss: beta must be > 0"):
        kto_loss(z, z, d, kl=0.0, beta=-0.1)
    with pytest.raises(ValueError, match="kto_loss: undesirable_weight must be >= 0"):
        kto_loss(z, z, d, kl=0.0, undesirable_weight=-1.0)
    with pytest.raises(ValueError, match=r"kto_loss: policy_logps \(2,\) and desirable \(3,\) differ in shape"):
        kto_loss(z, z, torch.tensor([True, False, True]), kl=0.0)
    with pytest.raises(ValueError, match="kto_loss: desirable must hold only 0/1"):
        kto_loss(z, z, torch.tensor([0.5, 1.0]), kl=0.0)
    with pytest.raises(ValueError, match="reward_model_loss: shapes do not broadcast"):
        reward_model_loss(z, torch.zeros(3))


def test_implicit_reward_by_hand_and_inside_dpo_loss():
    from rlnotes.preference import implicit_reward

    got = implicit_reward(torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -2.5]), 0.5)
    torch.testing.assert_close(got, torch.tensor([0.5, -0.25]))
    _, chosen, rejected = dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.5]),
                                   beta=0.5)
    torch.testing.assert_close(torch.cat([chosen, rejected]), got)
    with pytest.raises(ValueError, match="beta"):
        implicit_reward(torch.zeros(2), torch.zeros(2), 0.0)
