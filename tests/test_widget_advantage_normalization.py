"""Chapter 03 widget: GAE advantages of a trajectory, their normalization, GAE's bias and variance against lambda."""

import pytest
import torch

from rlnotes.advantages import td_target
from rlnotes.widgets import advantage_normalization as widget

torch.set_num_threads(1)


def test_lambda_zero_gives_the_td_errors_and_normalization_gives_mean_0_std_1():
    traj = widget.trajectory_advantages(gamma=0.9, lam=0.0, critic_error=0.5)
    values = traj["values"]
    next_values = torch.cat([values[1:], torch.zeros(1)])  # the episode ends in a terminal state (value 0)
    deltas = td_target(traj["rewards"], next_values, torch.zeros_like(values), 0.9) - values
    torch.testing.assert_close(traj["raw"], deltas)
    assert traj["normalized"].mean().abs() < 1e-9 and traj["normalized"].std() == pytest.approx(1.0)


def test_lambda_one_gives_the_return_minus_the_critic():
    traj = widget.trajectory_advantages(gamma=0.9, lam=1.0, critic_error=0.5)
    r = traj["rewards"]
    returns = torch.tensor([sum(0.9**k * float(r[t + k]) for k in range(len(r) - t)) for t in range(len(r))], dtype=r.dtype)
    torch.testing.assert_close(traj["raw"], returns - traj["values"])


def test_state_offsets_closed_forms_and_the_sampled_mean_per_state():
    v, v_hat, _ = widget.critic_values(0.99, critic_error=0.5)
    torch.testing.assert_close(widget.state_offsets(0.99, 1.0, 0.5), v - v_hat)  # lambda 1: U - V_hat, E[U | s] = V
    mdp, policy = widget.world()
    q_hat = (mdp.P * (mdp.R + 0.99 * v_hat)).sum(-1)  # one real step, then the critic
    lam0 = torch.where(mdp.terminal, torch.zeros_like(v), (policy * q_hat).sum(-1) - v_hat)
    torch.testing.assert_close(widget.state_offsets(0.99, 0.0, 0.5), lam0)  # lambda 0: the mean TD error
    assert widget.state_offsets(0.99, 0.6, 0.0).abs().max() < 1e-12  # an exact critic: no offset at all
    # the mean of the sampled GAE estimates over the visits of each state (actions drawn from pi) is o(s)
    ep = widget._episodes(1000, 1)
    advantages, alive = widget._gae_of_episodes(ep, v_hat, 0.99, 0.6)
    states, est = ep["states"].T[alive], advantages[alive]
    offsets = widget.state_offsets(0.99, 0.6, 0.5)
    for s in states.unique().tolist():
        sample = est[states == s]
        if len(sample) > 100:
            assert abs(sample.mean() - offsets[s]) < 4.5 * sample.std() / len(sample) ** 0.5 + 1e-9, s


def test_trajectory_marks_the_signs_that_normalization_flips():
    traj = widget.trajectory_advantages(gamma=0.99, lam=0.95, critic_error=0.5)
    torch.testing.assert_close(traj["centred"], traj["raw"] - traj["offset"])
    flipped = (traj["raw"] > 0) != (traj["normalized"] > 0)
    assert torch.equal(traj["flipped"], flipped) and flipped.any()  # centring can flip a sign...
    scaled = (traj["raw"] - traj["raw"].mean()) / traj["raw"].std()
    torch.testing.assert_close(traj["normalized"], scaled, atol=1e-6, rtol=1e-6)  # ...the std only rescales


def test_exact_critic_is_unbiased_at_every_lambda_and_variance_grows_with_lambda():
    curves = widget.bias_variance(gamma=0.99, critic_error=0.0)
    # with the exact V, E[delta_t | s, a] = A(s, a): no bias (what remains is sampling noise, far below the variance)
    assert (curves["bias2"] < 0.01 * curves["variance"]).all()
    assert curves["variance"][-1] > 5 * curves["variance"][0]


def test_a_wrong_critic_biases_small_lambdas_and_lambda_one_removes_it():
    curves = widget.bias_variance(gamma=0.99, critic_error=0.5)
    assert curves["bias2"][0] > 20 * curves["bias2"][-1]  # lambda 0 trusts the critic, lambda 1 does not
    assert (curves["bias2"][1:] <= curves["bias2"][:-1] + 1e-4).all()  # and the bias falls as lambda grows
    with pytest.raises(ValueError, match="critic_error"):
        widget.critic_values(0.9, critic_error=-1.0)


def test_view_redraws_when_the_sliders_move():
    box = widget.view()
    gamma, lam, error = box.children[0].children
    ax_raw, ax_norm, ax_bv = box.figure.axes
    heights = lambda ax: [p.get_height() for p in ax.patches]  # noqa: E731
    before_raw = heights(ax_raw)
    lam.value = 0.0
    expected = widget.trajectory_advantages(gamma.value, 0.0, error.value)
    assert heights(ax_raw) == pytest.approx(expected["centred"].tolist())  # compared with the truth, offsets removed
    assert heights(ax_raw) != pytest.approx(before_raw)
    assert heights(ax_norm) == pytest.approx(expected["normalized"].tolist())
    assert all(ax.get_ylabel() for ax in (ax_raw, ax_norm, ax_bv))
    assert ax_bv.lines[-1].get_xdata()[0] == 0.0  # the marker follows lambda
    gamma.value = 0.8
    assert "0.80" in ax_bv.get_title()
    error.value = 0.0
    assert ax_bv.lines[0].get_ydata().max() < 1e-3  # an exact critic: no bias at any lambda
