"""rlnotes.lm.task: prompts and splits, the exact-match reward worked by hand, the noisy teacher's statistics."""

import pytest
import torch

from rlnotes.lm.task import TEACHER_OFFSETS, AdditionTask

TASK = AdditionTask()
TOK = TASK.tokenizer


def ids(text, width=4):
    """Completion ids of `text` where '$' stands for EOS, right-padded to `width`."""
    out = [TOK.eos_id if c == "$" else TOK.encode(c)[0] for c in text]
    return out + [TOK.pad_id] * (width - len(out))


def test_sizes_and_prompt_text():
    assert (TASK.prompt_len, TASK.max_answer_len, TASK.max_new_tokens, TASK.block_size) == (6, 3, 4, 10)
    assert TASK.prompt_text(7, 58) == "07+58="
    pairs = torch.tensor([[7, 58], [0, 0], [99, 99]])
    assert TASK.prompt_texts(pairs) == ["07+58=", "00+00=", "99+99="]
    assert [TOK.decode(p) for p in TASK.prompts(pairs)] == ["07+58=", "00+00=", "99+99="]


def test_splits_partition_all_pairs_and_are_fixed_by_the_split_seed():
    train, heldout = TASK.split("train"), TASK.split("heldout")
    assert (len(train), len(heldout)) == (8000, 2000)
    keys = lambda p: set((p[:, 0] * 100 + p[:, 1]).tolist())  # noqa: E731
    assert keys(train) | keys(heldout) == set(range(10_000)) and not keys(train) & keys(heldout)
    torch.testing.assert_close(AdditionTask().split("heldout"), heldout)
    assert not torch.equal(AdditionTask(split_seed=1).split("heldout"), heldout)
    with pytest.raises(ValueError, match="name"):
        TASK.split("test")


def test_completions_by_hand():
    got = TASK.completions(torch.tensor([0, 7, 65, 100, 208]))
    assert got.tolist() == [ids("0$"), ids("7$"), ids("65$"), ids("100$"), ids("208$")]
    with pytest.raises(ValueError, match="answers"):
        TASK.completions(torch.tensor([-1]))


def test_reward_is_an_exact_match_that_includes_eos():
    pairs = torch.tensor([[7, 58]] * 7)  # 7 + 58 = 65
    completions = torch.tensor([
        ids("65$"),   # right
        ids("65"),    # no EOS: the model never stopped
        ids("650$"),  # an extra digit
        ids("56$"),   # wrong digits
        ids("065$"),  # a leading zero is a different string
        ids("6$5"),   # stopped too early, and something after EOS
        ids("65$6"),  # right, then a token after EOS (not padding)
    ])
    assert TASK.reward(pairs, completions).tolist() == [1.0, 0, 0, 0, 0, 0, 0]
    # widths other than max_new_tokens: extra padding is fine, a budget too short for the EOS is not
    assert TASK.reward(pairs[:1], torch.tensor([ids("65$", 6)])).tolist() == [1.0]
    assert TASK.reward(pairs[:1], torch.tensor([ids("65", 2)])).tolist() == [0.0]
    assert TASK.reward(torch.tensor([[0, 5]]), torch.tensor([ids("5$", 2)])).tolist() == [1.0]
    with pytest.raises(ValueError, match="completions"):
        TASK.reward(pairs, completions[:3])
    with pytest.raises(ValueError, match="pairs"):
        TASK.reward(torch.tensor([[100, 1]]), completions[:1])


def test_teacher_wrong_rate_and_mistakes():
    g = torch.Generator().manual_seed(0)
    pairs = TASK.split("train").repeat(3, 1)  # 24,000 demonstrations
    completions, wrong = TASK.teacher(pairs, 0.3, g)
    rewards = TASK.reward(pairs, completions)
    torch.testing.assert_close(rewards, (~wrong).float())  # flagged wrong <=> scored wrong
    n = len(pairs)
    assert abs(wrong.float().mean() - 0.3) < 4 * (0.3 * 0.7 / n) ** 0.5  # binomial, 4 standard errors
    answers = torch.tensor([int(TOK.decode(c)) for c in completions[wrong]])
    offsets = (answers - pairs[wrong].sum(-1)).abs()
    assert set(offsets.tolist()) == {abs(o) for o in TEACHER_OFFSETS}
    assert bool(TASK.in_teacher_support(pairs, completions).all())
    # small sums: 00+00 can only be written 0 (right) or 1, 10 (the flipped -1 and -10)
    zero = torch.tensor([[0, 0]] * 2000)
    written = {TOK.decode(c) for c in TASK.teacher(zero, 1.0, g)[0]}
    assert written == {"1", "10"}
    assert not TASK.teacher(zero, 0.0, g)[1].any()
    with pytest.raises(ValueError, match="wrong_rate"):
        TASK.teacher(zero, 1.5)


def test_teacher_support_by_hand():
    pairs = torch.tensor([[7, 58]] * 6)
    completions = torch.tensor([ids("65$"), ids("64$"), ids("75$"), ids("55$"), ids("63$"), ids("65")])
    assert TASK.in_teacher_support(pairs, completions).tolist() == [True, True, True, True, False, False]
