"""rlnotes.lm.bandit: DPO's derivation checked exactly on a categorical "bandit LM"."""

import pytest
import torch

from rlnotes.divergences import kl_categorical
from rlnotes.lm import bandit
from rlnotes.preference import bradley_terry

F64 = torch.float64
torch.set_num_threads(1)
X, K = 3, 5


def _problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(X, K, generator=g, dtype=F64), torch.randn(X, K, generator=g, dtype=F64), g


def test_closed_form_is_normalised_and_maximises_the_objective():
    ref, r, g = _problem()
    beta = 0.5
    star = bandit.optimal_logprobs(ref, r, beta)
    torch.testing.assert_close(star.exp().sum(-1), torch.ones(X, dtype=F64))
    j_star = bandit.kl_regularized_objective(star, ref, r, beta)
    torch.testing.assert_close(j_star, beta * bandit.log_partition(ref, r, beta))  # J(pi*) = beta log Z
    for _ in range(100):  # no random policy does better
        logits = torch.randn(X, K, generator=g, dtype=F64) * 3
        j = bandit.kl_regularized_objective(logits, ref, r, beta)
        assert bool((j <= j_star + 1e-12).all())
        # the identity behind it: J(pi) = beta log Z - beta KL(pi || pi*)
        torch.testing.assert_close(j, j_star - beta * kl_categorical(logits, star))


def test_gradient_ascent_on_the_objective_finds_the_closed_form():
    ref, r, _ = _problem(1)
    beta = 0.3
    logits = ref.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([logits], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-15, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = -bandit.kl_regularized_objective(logits, ref, r, beta).sum()
        loss.backward()
        return loss

    for _ in range(3):
        opt.step(closure)
    # an iterative optimizer stops near, not at, the optimum; a wrong closed form would be off by ~0.1
    assert float(kl_categorical(bandit.optimal_logprobs(ref, r, beta), logits.detach()).max()) < 1e-7


def test_implied_reward_is_the_reward_up_to_beta_log_z_and_z_cancels():
    ref, r, _ = _problem(2)
    beta = 0.2
    star = bandit.optimal_logprobs(ref, r, beta)
    implied = bandit.implied_reward(star, ref, beta)
    torch.testing.assert_close(implied, r - beta * bandit.log_partition(ref, r, beta)[:, None])
    # Bradley-Terry on the implied rewards = on the true rewards, for every pair: Z cancels in the gap
    torch.testing.assert_close(
        bradley_terry(implied[:, :, None], implied[:, None, :]), bradley_terry(r[:, :, None], r[:, None, :])
    )
    # a per-prompt shift of the reward changes Z but not pi*
    shifted = r + torch.tensor([[5.0], [-3.0], [0.7]], dtype=F64)
    torch.testing.assert_close(bandit.optimal_logprobs(ref, shifted, beta), star)
    assert not torch.allclose(bandit.log_partition(ref, shifted, beta), bandit.log_partition(ref, r, beta))


def test_sampled_preferences_follow_bradley_terry():
    _, r, g = _problem(3)
    n = 200_000
    prompt, chosen, rejected = bandit.sample_preferences(r, n, g)
    assert bool((chosen != rejected).all())
    counts = bandit.preference_counts(prompt, chosen, rejected, X, K)
    assert counts.sum() == n
    total = counts + counts.transpose(1, 2)  # comparisons of each unordered pair
    p_hat = counts[total > 0] / total[total > 0]
    p = torch.sigmoid(r[:, :, None] - r[:, None, :])[total > 0]
    z = (p_hat - p) / (p * (1 - p) / total[total > 0]).sqrt()
    assert float(z.abs().max()) < 5  # every pair within 5 standard errors of its Bradley-Terry probability
    expected = n / (X * K * (K - 1))  # prompt and ordered pair are uniform
    assert float((total[total > 0] / 2 - expected).abs().max()) < 6 * expected**0.5


def test_dpo_on_infinite_data_recovers_the_closed_form_exactly():
    ref, r, _ = _problem(4)
    for beta in (0.1, 1.0):
        fit = bandit.fit_dpo(ref, bandit.expected_counts(r), beta)
        assert float(kl_categorical(bandit.optimal_logprobs(ref, r, beta), fit).max()) < 1e-10


def test_dpo_on_sampled_preferences_is_close_and_equals_rlhf_on_the_same_data():
    ref, r, g = _problem(5)
    beta = 0.5
    counts = bandit.preference_counts(*bandit.sample_preferences(r, 200_000, g), X, K)
    fit = bandit.fit_dpo(ref, counts, beta)
    star = bandit.optimal_logprobs(ref, r, beta)
    # sampling noise only: the fitted reward's error is ~ 1/sqrt(comparisons); KL ~ 1e-4 here
    assert float(kl_categorical(star, fit).max()) < 2e-3
    # RLHF's two stages on the same data (Bradley-Terry reward model, then the closed form) give DPO's policy
    via_reward_model = bandit.optimal_logprobs(ref, bandit.fit_reward_model(counts), beta)
    assert float(kl_categorical(via_reward_model, fit).max()) < 1e-10


def test_bad_input():
    ref, r, _ = _problem()
    with pytest.raises(ValueError, match="beta"):
        bandit.optimal_logprobs(ref, r, 0.0)
    with pytest.raises(ValueError, match="rewards"):
        bandit.log_partition(ref, r[:, :3], 1.0)
    with pytest.raises(ValueError, match="counts"):
        bandit.dpo_objective(ref, ref, torch.zeros(X, K), 1.0)
    with pytest.raises(ValueError, match="n"):
        bandit.sample_preferences(r, 0)
