"""Chapter 07 widget: group advantages under each scaling, and GAE with a constant critic, against hand values."""

import pytest
import torch

from rlnotes.widgets import group_advantage


def test_group_advantages_by_hand():
    r = [1.0, 0.0, 0.0, 1.0]  # mean 0.5, unbiased std sqrt(1/3)
    adv = group_advantage.group_advantages(r)
    std = (1 / 3) ** 0.5
    torch.testing.assert_close(adv["Dr. GRPO (no std)"], torch.tensor([0.5, -0.5, -0.5, 0.5], dtype=torch.float64))
    torch.testing.assert_close(adv["GRPO (/ std)"], torch.tensor([0.5, -0.5, -0.5, 0.5], dtype=torch.float64) / (std + 1e-4))
    # leave one out: 1 - mean(0, 0, 1) = 2/3; 0 - mean(1, 0, 1) = -2/3  (= G/(G-1) times the group-mean version)
    torch.testing.assert_close(adv["RLOO (leave one out)"], torch.tensor([2, -2, -2, 2], dtype=torch.float64) / 3)


def test_equal_rewards_give_zero_under_every_scheme():
    for adv in group_advantage.group_advantages([0.7] * 6).values():
        assert torch.equal(adv, torch.zeros(6, dtype=torch.float64))


def test_gae_with_lambda_one_and_the_group_mean_as_critic_is_dr_grpo_on_every_token():
    r, lengths = [1.0, 0.0, 0.0, 1.0, 1.0], [3, 1, 4, 2, 5]
    mean = sum(r) / len(r)
    critic = group_advantage.critic_advantages(r, lengths, value=mean, lam=1.0)
    dr = group_advantage.group_advantages(r)["Dr. GRPO (no std)"]
    for adv, T, a in zip(critic, lengths, dr):
        assert adv.shape == (T,)
        torch.testing.assert_close(adv, torch.full((T,), float(a), dtype=torch.float64))


def test_gae_with_lambda_below_one_discounts_early_tokens():
    # constant critic: every TD error is 0 except the last, r - V; A_t = lam^(T - 1 - t) (r - V)
    (adv,) = group_advantage.critic_advantages([1.0], [4], value=0.25, lam=0.5)
    torch.testing.assert_close(adv, torch.tensor([0.125, 0.25, 0.5, 1.0], dtype=torch.float64) * 0.75)


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="G >= 2"):
        group_advantage.group_advantages([1.0])
    with pytest.raises(ValueError, match="one length >= 1"):
        group_advantage.critic_advantages([1.0, 0.0], [3], 0.5, 0.9)


def test_view_redraws_when_a_reward_moves():
    box = group_advantage.view()
    image = box.children[-1]
    png_before = bytes(image.value)
    assert png_before.startswith(b"\x89PNG")
    box.sliders[1].value = 1.0  # the second answer becomes right: 3 of 6 now
    after = box.data["group"]["Dr. GRPO (no std)"]
    torch.testing.assert_close(after, torch.tensor([0.5, 0.5, -0.5, 0.5, -0.5, -0.5], dtype=torch.float64))
    assert bytes(image.value) != png_before
    for slider in box.sliders[:6]:
        slider.value = 0.0  # all wrong: nothing to learn from this group
    assert all(torch.equal(a, torch.zeros(6, dtype=torch.float64)) for a in box.data["group"].values())
