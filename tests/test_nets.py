"""The course's one categorical sampler (rlnotes.nets.sample_categorical), and the policies that use it."""

import torch

from rlnotes.nets import CategoricalPolicy, sample_categorical

torch.set_num_threads(1)


def test_draws_follow_the_softmax_of_the_logits():
    logits = torch.tensor([[0.0, 1.0, -1.0, 2.0], [3.0, 0.0, 0.0, -2.0]], dtype=torch.float64)  # (2, 4)
    n = 200_000
    draws = sample_categorical(logits.expand(n, 2, 4), torch.Generator().manual_seed(0))  # (n, 2)
    assert draws.shape == (n, 2) and draws.dtype == torch.long
    for row in range(2):
        freq = torch.bincount(draws[:, row], minlength=4).double() / n
        p = torch.softmax(logits[row], -1)
        se = (p * (1 - p) / n).sqrt()
        assert ((freq - p).abs() <= 5 * se + 1e-12).all(), (freq, p)


def test_zero_probabilities_are_never_drawn_and_a_generator_repeats_its_stream():
    probs = torch.tensor([0.0, 0.3, 0.0, 0.7, 0.0], dtype=torch.float64)
    draws = sample_categorical(probs.log().expand(100_000, 5), torch.Generator().manual_seed(1))
    assert set(draws.unique().tolist()) == {1, 3}
    again = sample_categorical(probs.log().expand(100_000, 5), torch.Generator().manual_seed(1))
    assert torch.equal(draws, again)
    assert sample_categorical(probs.log(), torch.Generator().manual_seed(2)).dim() == 0  # (K,) -> ()


def test_the_categorical_policy_samples_through_it():
    policy = CategoricalPolicy(3, 4)
    obs = torch.randn(6, 3)
    torch.manual_seed(5)
    actions = policy.sample(obs)
    torch.manual_seed(5)
    assert torch.equal(actions, sample_categorical(policy.logits(obs)))
