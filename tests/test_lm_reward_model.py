"""The simulated annotator and the Bradley-Terry reward model of chapter 08 (RLHF, stage 2).

The annotator's taste, bias and flip rate are checked on hand-built answers (the rates within a
binomial bound); the reward model is trained once, on a small SFT model with a fixed seed, and must
rank held-out pairs far above chance. Full-budget numbers are in notebook 08 and the module docstring.
"""

import math

import pytest
import torch

from rlnotes.lm import reward_model
from rlnotes.lm.annotator import Annotator, rankings_to_pairs
from rlnotes.lm.task import AdditionTask
from rlnotes.preference import reward_model_loss
from rlnotes.utils import course_seed

torch.set_num_threads(1)
TASK = AdditionTask()
TOK = TASK.tokenizer
# Bounds on trained runs: each held on 15 runs (seed offsets 0-4 x torch kernels native, default, avx2) with a
# margin below the worst; the measured ranges are in benchmarks/claims.md (tools/claims.py). SFT model: conftest.py.
RM_PAIR_ACCURACY_BOUND, RM_RIGHT_BOUND = 0.8, 0.8  # worst 0.902, 0.92
FAST_RM = dict(steps=120, train_prompts=1000, eval_prompts=300, eval_every=120, progress_bar=False)  # ~5 s


def ids(*answers, n=TASK.max_new_tokens):
    """Completion ids from strings: digits, 'E' for EOS, '+' as a stray symbol; padded to n."""
    rows = [[TOK.eos_id if ch == "E" else TOK.stoi[ch] for ch in a] for a in answers]
    return torch.tensor([r + [TOK.pad_id] * (n - len(r)) for r in rows])


def prompt(a, b, rows):
    return torch.tensor([[a, b]] * rows)


def within_binomial(successes, n, p, sigmas=4.5):
    return abs(successes / n - p) <= sigmas * math.sqrt(p * (1 - p) / n)


# ---------------------------------------------------------------- the annotator's taste


def test_taste_right_beats_wrong_closer_beats_farther_and_non_numbers_are_worst():
    annotator = Annotator(flip_rate=0.0, short_bias=0.0)
    answers = ids("65E", "64E", "66E", "75E", "165E", "065E", "6+E", "E", "6565")  # 07 + 58 = 65
    taste = annotator.taste(prompt(7, 58, len(answers)), answers)
    assert taste[:5].tolist() == [0.0, -1.0, -1.0, -10.0, -100.0]
    assert bool((taste[5:] == annotator.worst).all())  # leading zero, a symbol, empty, no EOS
    assert bool((taste[5:] < taste[4]).all())
    assert TASK.reward(prompt(7, 58, len(answers)), answers).tolist() == [1.0] + [0.0] * 8  # right <=> taste 0


def test_compare_without_noise_or_bias_follows_the_taste():
    annotator = Annotator(flip_rate=0.0, short_bias=0.0)
    a, b = ids("65E", "64E", "75E", "6+E"), ids("64E", "75E", "165E", "99E")
    assert annotator.compare(prompt(7, 58, 4), a, b).tolist() == [True, True, True, False]
    tie = annotator.compare(prompt(7, 58, 4000), ids("64E").repeat(4000, 1), ids("66E").repeat(4000, 1),
                            torch.Generator().manual_seed(0))
    assert within_binomial(int(tie.sum()), 4000, 0.5)  # equal taste: a coin flip


def test_flip_rate_is_the_share_of_flipped_labels():
    n, gen = 20_000, torch.Generator().manual_seed(0)
    annotator = Annotator(flip_rate=0.1, short_bias=0.5)
    a_wins = annotator.compare(prompt(7, 58, n), ids("65E").repeat(n, 1), ids("6E").repeat(n, 1), gen)
    assert within_binomial(int((~a_wins).sum()), n, 0.1)  # the right answer loses only by a flip


def test_short_bias_prefers_the_shorter_of_two_wrong_numbers():
    n, gen = 20_000, torch.Generator().manual_seed(1)
    pairs, short, close = prompt(50, 55, n), ids("95E").repeat(n, 1), ids("106E").repeat(n, 1)  # 105: 95 is 10 off, 106 is 1 off
    wins = Annotator(flip_rate=0.0, short_bias=0.2).compare(pairs, short, close, gen)
    assert within_binomial(int(wins.sum()), n, 0.2)
    wins = Annotator(flip_rate=0.1, short_bias=0.2).compare(pairs, short, close, gen)
    assert within_binomial(int(wins.sum()), n, 0.2 * 0.9 + 0.8 * 0.1)  # bias, then a flip
    # no bias when one answer is right, or when both have the same length
    right = Annotator(flip_rate=0.0, short_bias=1.0).compare(prompt(50, 55, 2), ids("105E", "104E"), ids("95E", "115E"))
    assert right.tolist() == [True, True]


def test_rank_without_noise_sorts_by_taste():
    completions = torch.stack([ids("75E", "65E", "E", "64E")])  # (1, 4, N) for 07 + 58
    order = Annotator(flip_rate=0.0, short_bias=0.0).rank(prompt(7, 58, 1), completions, torch.Generator().manual_seed(0))
    assert order.tolist() == [[1, 3, 0, 2]]


def test_rankings_to_pairs_gives_every_comparison_best_first():
    completions = torch.arange(2 * 3).view(2, 3, 1)  # answer j of prompt i is the single id 3 i + j
    order = torch.tensor([[2, 0, 1], [0, 1, 2]])
    rows, chosen, rejected = rankings_to_pairs(completions, order)
    assert len(rows) == 2 * 3 * 2 // 2
    assert rows.tolist() == [0, 0, 0, 1, 1, 1]
    assert chosen.squeeze(1).tolist() == [2, 2, 0, 3, 3, 4]
    assert rejected.squeeze(1).tolist() == [0, 1, 1, 4, 5, 5]
    rows, _, _ = rankings_to_pairs(torch.zeros(5, 4, 2, dtype=torch.long), torch.arange(4).repeat(5, 1))
    assert len(rows) == 5 * 6  # K(K-1)/2 = 6 for K = 4 (InstructGPT's smallest K)


# ---------------------------------------------------------------- the reward model


def test_ranking_loss_is_reward_model_loss_averaged_over_the_comparisons():
    rewards = torch.tensor([[1.0, 0.0, 2.0], [0.5, -0.5, 3.0]])
    order = torch.tensor([[2, 0, 1], [0, 1, 2]])
    loss, accuracy = reward_model.ranking_loss(rewards, order)
    by_hand = reward_model_loss(torch.tensor([2.0, 2.0, 1.0, 0.5, 0.5, -0.5]), torch.tensor([1.0, 0.0, 0.0, -0.5, 3.0, 3.0]))
    torch.testing.assert_close(loss, by_hand.mean())
    assert accuracy.item() == pytest.approx(4 / 6)
    weight = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])  # the second prompt's comparisons do not count
    torch.testing.assert_close(reward_model.ranking_loss(rewards, order, weight)[0], by_hand[:3].mean())


@pytest.fixture(scope="module")
def sft_model(sft_run):  # conftest.py: seed 1, 500 steps
    return sft_run[0]


def test_readouts_read_the_right_positions(sft_model):
    pairs = prompt(7, 58, 3)
    prompts, completions = TASK.prompts(pairs), ids("65E", "6E", "654")
    rm = reward_model.build_reward_model(sft_model, "token")
    logits = sft_model(torch.cat([prompts, completions], 1)[:, :-1])  # (3, P + N - 1, V)
    tokens = completions[0, :3]  # "6", "5", EOS, read at the positions before them
    expected = logits[0, TASK.prompt_len - 1 + torch.arange(3), tokens].sum()
    torch.testing.assert_close(reward_model.score(rm, prompts, completions)[0], expected.detach())  # from SFT: the logits' sum
    last = reward_model.build_reward_model(sft_model, "last")
    values, mask = last.per_token(prompts, completions)
    assert mask.tolist() == [[True] * 3 + [False], [True, True, False, False], [True] * 4]
    torch.testing.assert_close(reward_model.score(last, prompts, completions), values[[0, 1, 2], [2, 1, 3]].detach())


@pytest.mark.trained
def test_reward_model_ranks_heldout_pairs_far_above_chance(sft_model, measured):
    """120 steps on 1,000 ranked prompts from the course's SFT model: held-out pairs ordered as the annotator
    orders them, and the right answer scored above a far wrong one (sum + 10)."""
    snapshot = [p.detach().clone() for p in sft_model.parameters()]
    history = reward_model.train(reward_model.Config(seed=course_seed(1), **FAST_RM), sft_model=sft_model, task=TASK)
    assert all(torch.equal(p, q) for p, q in zip(sft_model.parameters(), snapshot))  # the RM trained a copy
    before, after = history["heldout_before"], history["heldout"]
    rm = history["model"]
    heldout = TASK.split("heldout")[:200]
    right = reward_model.score(rm, TASK.prompts(heldout), TASK.correct_completions(heldout))  # (200,)
    wrong = reward_model.score(rm, TASK.prompts(heldout), TASK.completions(heldout.sum(-1) + 10))
    right_first = measured("right_over_sum_plus_10", float((right > wrong).float().mean()))
    # logged, not asserted: how much better than the SFT model's own logits it orders two wrong answers by
    # closeness (-0.05 to +0.19 over the runs of benchmarks/claims.md: this 120-step budget does not reliably learn it)
    measured("wrong_vs_wrong_gain", after["wrong_vs_wrong"] - before["wrong_vs_wrong"])
    assert measured("pair_accuracy", after["pair_accuracy"]) > RM_PAIR_ACCURACY_BOUND
    assert history["eval_step"] == [120] and history["loss"][0] < math.log(2)
    assert right.shape == (200,) and right_first > RM_RIGHT_BOUND


def test_bad_inputs_raise_value_errors_naming_the_argument():
    with pytest.raises(ValueError, match="flip_rate"):
        Annotator(flip_rate=0.5)
    with pytest.raises(ValueError, match="short_bias"):
        Annotator(short_bias=1.5)
    with pytest.raises(ValueError, match="readout"):
        reward_model.Config(readout="first")
    with pytest.raises(ValueError, match="k must be >= 2"):
        reward_model.Config(k=1)
    with pytest.raises(ValueError, match="flip_rate"):
        reward_model.Config(flip_rate=-0.1)
    annotator = Annotator()
    with pytest.raises(ValueError, match="b must be a"):
        annotator.compare(prompt(7, 58, 2), ids("65E", "6E"), ids("65E", "6E")[0])
    with pytest.raises(ValueError, match="pairs"):
        annotator.taste(prompt(7, 58, 3), ids("65E", "6E"))
    with pytest.raises(ValueError, match="order"):
        rankings_to_pairs(torch.zeros(2, 3, 4, dtype=torch.long), torch.tensor([[0, 0, 1], [0, 1, 2]]))
    with pytest.raises(ValueError, match="order"):
        reward_model.ranking_loss(torch.zeros(2, 3), torch.zeros(2, 4, dtype=torch.long))
