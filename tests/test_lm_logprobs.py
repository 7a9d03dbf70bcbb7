"""rlnotes.lm.logprobs and sampling: masks by hand, log-probs against gather(log_softmax) and a per-sequence loop."""

import pytest
import torch
import torch.nn.functional as F

from rlnotes.lm import sampling
from rlnotes.lm.logprobs import collate, masked_mean, masked_sum, sequence_logprobs, token_logprobs
from rlnotes.lm.model import GPT, GPTConfig
from rlnotes.lm.task import AdditionTask

torch.set_num_threads(1)
TASK = AdditionTask()


def _model(seed=0):
    torch.manual_seed(seed)
    model = GPT(GPTConfig(14, 10)).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(5.0)  # far from uniform logits
    return model


def test_token_logprobs_against_gather_log_softmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=g, dtype=torch.float64) * 4
    targets = torch.randint(7, (3, 5), generator=g)
    reference = F.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)
    torch.testing.assert_close(token_logprobs(logits, targets), reference)
    with pytest.raises(ValueError, match="targets"):
        token_logprobs(logits, targets[:, :4])


def test_collate_masks_the_prompt_and_padding_and_counts_eos():
    prompts = torch.tensor([[5, 6], [5, 7]])
    completions = torch.tensor([[2, 3, 1, 0], [4, 1, 0, 0]])  # "ab<eos><pad>", "c<eos><pad><pad>"
    tokens, mask = collate(prompts, completions, eos_id=1)
    assert tokens.tolist() == [[5, 6, 2, 3, 1, 0], [5, 7, 4, 1, 0, 0]]
    assert mask.tolist() == [[False, False, True, True, True, False], [False, False, True, True, False, False]]
    # no EOS within the budget: every completion token counts; a generated 0 before EOS is a real token
    tokens, mask = collate(prompts[:1], torch.tensor([[2, 0, 3, 4]]), eos_id=1)
    assert mask.tolist() == [[False, False, True, True, True, True]]
    with pytest.raises(ValueError, match="completions"):
        collate(prompts, completions[:1])


def test_masked_sum_and_mean_by_hand():
    values = torch.tensor([[1.0, 2.0, 4.0], [3.0, 5.0, 7.0]])
    mask = torch.tensor([[True, False, True], [False, True, False]])
    assert masked_sum(values, mask).tolist() == [5.0, 5.0]
    assert masked_mean(values, mask).tolist() == [2.5, 5.0]
    with pytest.raises(ValueError, match="no True"):
        masked_mean(values, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="differ in shape"):
        masked_sum(values, mask[:, :2])


def test_sequence_logprobs_against_a_loop_over_answer_tokens():
    """log pi(y | x) = sum over the answer's tokens and its EOS of log pi(token | everything before)."""
    model = _model().requires_grad_(False)
    pairs = torch.tensor([[7, 58], [0, 3], [99, 99]])
    completions = TASK.correct_completions(pairs)  # 65<eos>, 3<eos>, 198<eos>
    tokens, mask = collate(TASK.prompts(pairs), completions, TASK.tokenizer.eos_id)
    out = sequence_logprobs(model, tokens, mask)
    for b, (prompt, answer) in enumerate(zip(TASK.prompt_texts(pairs), ["65", "3", "198"])):
        ids = TASK.tokenizer.encode(prompt) + TASK.tokenizer.encode(answer, eos=True)
        total = 0.0
        for t in range(len(prompt), len(ids)):  # each answer token, EOS included, given its prefix
            logits = model(torch.tensor([ids[:t]]))[0, -1]
            total += F.log_softmax(logits, -1)[ids[t]].item()
        assert out["sum"][b].item() == pytest.approx(total, abs=1e-9)
        assert out["mean"][b].item() == pytest.approx(total / (len(answer) + 1), abs=1e-9)
    assert out["per_token"].shape == out["mask"].shape == (3, 9)
    assert bool((out["per_token"][~out["mask"]] == 0).all())


def test_masked_sum_and_mean_ignore_nan_and_inf_at_masked_entries():
    # 0 * nan = nan and 0 * -inf = nan: masked entries used to leak through the multiplication
    values = torch.tensor([[1.0, float("nan"), 4.0], [float("-inf"), 5.0, float("inf")]], requires_grad=True)
    mask = torch.tensor([[True, False, True], [False, True, False]])
    assert masked_sum(values, mask).tolist() == [5.0, 5.0]
    assert masked_mean(values, mask).tolist() == [2.5, 5.0]
    (g,) = torch.autograd.grad(masked_mean(values, mask).sum(), values)
    assert g.tolist() == [[0.5, 0.0, 0.5], [0.0, 1.0, 0.0]]


def test_sequence_logprobs_masked_token_of_zero_probability_is_exactly_zero():
    """A model that gives padding (id 0) log-prob -inf: per_token is 0 there, and the sums stay finite."""

    def model(ids):  # (B, T) -> (B, T, V=4): uniform over ids 1..3, id 0 impossible
        logits = torch.zeros(*ids.shape, 4, dtype=torch.float64)
        logits[..., 0] = float("-inf")
        return logits

    tokens = torch.tensor([[2, 3, 1, 0], [2, 1, 0, 0]])  # prompt 2, answer, EOS (1), padding (0)
    mask = torch.tensor([[False, True, True, False], [False, True, False, False]])
    out = sequence_logprobs(model, tokens, mask)
    log_third = -torch.log(torch.tensor(3.0, dtype=torch.float64)).item()
    assert out["per_token"].tolist() == [[log_third, log_third, 0.0], [log_third, 0.0, 0.0]]
    assert out["sum"].tolist() == pytest.approx([2 * log_third, log_third])
    assert out["mean"].tolist() == pytest.approx([log_third, log_third])


def test_sample_pads_after_eos_and_greedy_is_deterministic():
    model = _model(seed=1).float()
    prompts = TASK.prompts(TASK.split("heldout")[:300])
    g = torch.Generator().manual_seed(0)
    out = sampling.sample(model, prompts, 4, 1.0, g, batch_size=64)
    assert out.shape == (300, 4)
    is_eos = out == 1
    after = (is_eos.long().cumsum(-1) - is_eos.long()) > 0
    assert bool((out[after] == 0).all())  # padding, and only padding, after the first EOS
    torch.testing.assert_close(sampling.sample(model, prompts, 4, 0.0), sampling.sample(model, prompts, 4, 0.0, batch_size=7))
    with pytest.raises(ValueError, match="temperature"):
        sampling.sample(model, prompts, 4, -0.5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        sampling.sample(model, prompts, 0)


class _Oracle(torch.nn.Module):
    """A 'model' that knows the answer: it puts probability p_right on the right next token."""

    def __init__(self, p_right):
        super().__init__()
        self.p_right = p_right
        self.config = GPTConfig(14, 10)

    generate = GPT.generate  # the real generation loop, driven by this model's logits

    def forward(self, idx, cache=None):
        if cache is not None:  # keep the whole sequence in the cache to read the prompt back
            idx = torch.cat([cache.pop(), idx], 1) if cache else idx
            cache.append(idx)
        B, T = idx.shape
        pairs = torch.stack([(idx[:, 0] - 2) * 10 + idx[:, 1] - 2, (idx[:, 3] - 2) * 10 + idx[:, 4] - 2], 1)
        target = torch.cat([torch.zeros(B, 6, dtype=torch.long), TASK.correct_completions(pairs)], 1)  # (B, 10)
        nxt = target[:, T]  # the right next token after this prefix
        logits = torch.full((B, T, 14), -1e9)
        logits[:, -1] = torch.log(torch.tensor((1 - self.p_right) / 13))
        logits[torch.arange(B), -1, nxt] = torch.log(torch.tensor(self.p_right))
        return logits


def test_evaluate_greedy_and_sampled_against_a_known_model():
    pairs = TASK.split("heldout")[:500]
    perfect = _Oracle(0.999999)
    assert sampling.evaluate(perfect, TASK, pairs, temperature=0.0) == 1.0
    shaky = _Oracle(0.8)  # right at each step with probability 0.8: right answer with 0.8 ** (digits + 1)
    lengths = torch.tensor([len(str(s)) + 1 for s in pairs.sum(-1).tolist()], dtype=torch.float64)
    expected = float((0.8**lengths).mean())
    got = sampling.evaluate(shaky, TASK, pairs, 1.0, torch.Generator().manual_seed(0), samples_per_prompt=8)
    assert got == pytest.approx(expected, abs=4 * (0.25 / 4000) ** 0.5)
    assert sampling.evaluate(shaky, TASK, pairs, temperature=0.0) == 1.0  # greedy follows the 0.8 token
