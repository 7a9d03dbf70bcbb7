"""The language-model side against public GRPO, PPO-RLHF and DPO bug reports (TRL, verl, OpenRLHF, NeMo-RL).

One section per kind of fault of the issue: (1) the distribution sampled is the one scored (temperature,
dropout); (2) a per-sequence value is never broadcast silently; (3) a NaN reward does not spread; (4) sums
of log-probs and reward statistics in float32; (5) empty input; (6) which KL the k3 term descends, and
which adaptive-KL rule is whose. Each right value is computed independently: by hand, by exact enumeration,
by autograd, or from TRL 1.16's source, and the comment at each test names where the case comes from.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from rlnotes.advantages import group_relative, normalize
from rlnotes.divergences import AdaptiveKL, ProportionalKL, kl_categorical, kl_estimate
from rlnotes.lm import dpo, grpo, reward_model, rlhf, rollout, sampling, sft
from rlnotes.lm.logprobs import sequence_logprobs
from rlnotes.lm.model import GPT, GPTConfig, disable_dropout
from rlnotes.lm.rollout import Samples
from rlnotes.lm.task import AdditionTask
from rlnotes.objectives import aggregate, clip_active, clip_fraction, clipped_surrogate, pg_loss, surrogate_loss, value_loss
from rlnotes.preference import bradley_terry, dpo_loss, kto_loss, reward_model_loss

torch.set_num_threads(1)
TASK = AdditionTask()
F64 = torch.float64
NAN = float("nan")
LN2 = math.log(2.0)


def t(x, dtype=F64):
    return torch.tensor(x, dtype=dtype)


def _tiny(dropout=0.0, seed=0):
    """An untrained small GPT (its answers are random); `dropout` as GPTConfig's."""
    torch.manual_seed(seed)
    return GPT(GPTConfig(TASK.tokenizer.vocab_size, TASK.block_size, n_layer=1, n_head=2, n_embd=32, dropout=dropout))


class FixedLogits(torch.nn.Module):
    """A 'model' whose next-token logits are the same at every position: a categorical LM of vocabulary V."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.as_tensor(logits, dtype=F64))

    def forward(self, idx):  # (B, T) -> (B, T, V)
        return self.logits.expand(*idx.shape, -1)


def _one_token_batch(V):
    """Every one-token answer y in 0..V-1 after a one-token prompt: tokens (V, 2), completion_mask (V, 2)."""
    tokens = torch.stack([torch.zeros(V, dtype=torch.long), torch.arange(V)], dim=1)
    mask = torch.tensor([[False, True]] * V)
    return tokens, mask


# ---- 1. the distribution that is sampled is the one that is scored ------------------------------------


def test_k1_penalty_at_temperature_is_a_penalty_when_every_model_is_scored_at_it():
    # The exact case (TRL's GRPO/PPO divide the logits of policy, old policy and reference by T):
    # pi = softmax([1, 0, 0]), pi_ref = [0.8, 0.1, 0.1], T = 0.5. Scoring the untempered policy gave
    # E_{y ~ pi_T}[log pi(y) - log pi_ref(y)] = -0.098 (a bonus). Scored at T, E[k1] = KL(pi_T || ref_T) >= 0.
    T = 0.5
    policy, ref = FixedLogits([1.0, 0.0, 0.0]), FixedLogits(torch.log(t([0.8, 0.1, 0.1])))
    tokens, mask = _one_token_batch(3)
    with torch.no_grad():
        logp = sequence_logprobs(policy, tokens, mask, T)["per_token"][:, 0]  # (3,) log pi_T(y)
        ref_logp = sequence_logprobs(ref, tokens, mask, T)["per_token"][:, 0]
        untempered = sequence_logprobs(policy, tokens, mask)["per_token"][:, 0]
        untempered_ref = sequence_logprobs(ref, tokens, mask)["per_token"][:, 0]
    pi_T = torch.softmax(t([2.0, 0.0, 0.0]), -1)  # what `sample` draws from at T = 0.5, by hand
    assert torch.allclose(logp.exp(), pi_T, atol=1e-12)
    k1_bug = (pi_T * (untempered - untempered_ref)).sum()
    assert k1_bug.item() == pytest.approx(-0.098, abs=5e-4)  # the bug's value
    k1 = (pi_T * kl_estimate(logp, ref_logp, "k1")).sum()  # exact expectation over the 3 answers
    exact = kl_categorical(t([2.0, 0.0, 0.0]), torch.log(t([0.8, 0.1, 0.1])) / T)
    assert k1.item() == pytest.approx(exact.item(), abs=1e-12) and k1.item() == pytest.approx(0.2509, abs=5e-4)
    assert kl_categorical(t([1.0, 0.0, 0.0]), torch.log(t([0.8, 0.1, 0.1]))).item() == pytest.approx(0.129, abs=5e-4)


def test_collect_scores_both_models_at_the_sampling_temperature():
    # rollout.collect(temperature=T) sampled from softmax(logits / T) but stored log softmax(logits) in old_logp
    policy, ref = _tiny(seed=0).eval(), _tiny(seed=1).eval()
    data = rollout.collect(policy, ref, TASK, TASK.split("train")[:4], 3, torch.Generator().manual_seed(0), temperature=0.5)
    assert data.temperature == 0.5
    for model, stored in ((policy, data.old_logp), (ref, data.ref_logp)):
        with torch.no_grad():  # independent: float64 log_softmax of logits / T, gathered at the sampled tokens
            logits = model(data.tokens[:, :-1]).double() / 0.5
        by_hand = logits.log_softmax(-1).gather(-1, data.tokens[:, 1:, None]).squeeze(-1)
        assert torch.allclose(stored[data.mask].double(), by_hand[data.mask], atol=1e-5)


def _grpo_first_step_clip_fractions(model, **overrides):
    """clip_fraction of every iteration with one inner step and eps = 1e-6: 0 exactly when pi / pi_old = 1."""
    config = grpo.Config(seed=0, iterations=2, prompts_per_iteration=4, group_size=2, inner_steps=1, clip_eps=1e-6,
                         eval_every=100, eval_prompts=8, probe_prompts=4, eval_samples=1, progress_bar=False, **overrides)
    return grpo.train(config, ref_model=model, task=TASK)["clip_fraction"]


def test_grpo_first_inner_step_has_ratio_one_at_a_temperature():
    # the update must score the policy at the temperature the rollout was sampled (and scored) at
    assert _grpo_first_step_clip_fractions(_tiny(), temperature=0.5) == [0.0, 0.0]


def test_grpo_first_inner_step_has_ratio_one_with_dropout():
    # GPTConfig(dropout=0.1), what hf.from_hf gives for a default GPT-2 config: |ratio - 1| reached 0.11
    # (TRL's disable_dropout turns dropout off in the trained policy)
    assert _grpo_first_step_clip_fractions(_tiny(dropout=0.1)) == [0.0, 0.0]


def test_rlhf_first_minibatch_has_ratio_one_with_dropout_and_a_temperature():
    model = _tiny(dropout=0.1)
    rm = reward_model.build_reward_model(model, "sum")
    config = rlhf.Config(seed=0, iterations=2, prompts_per_iteration=4, samples_per_prompt=2, epochs=1, minibatches=1,
                         clip_eps=1e-6, temperature=0.7, eval_every=100, eval_prompts=8, probe_prompts=4, eval_samples=1,
                         progress_bar=False)
    history = rlhf.train(config, ref_model=model, reward_model=rm, task=TASK)
    assert history["clip_fraction"] == [0.0, 0.0]
    assert all(m.p == 0.0 for m in history["critic"].modules() if isinstance(m, torch.nn.Dropout))


def _fabricated_samples(model, B=16, k=2):
    """k answers of `model` per training prompt with made-up rewards [1, 0]: every prompt gives a pair."""
    samples = rollout.sample_answers(model, TASK, TASK.split("train")[:B], k, torch.Generator().manual_seed(0))
    rewards = torch.zeros(B, k)
    rewards[:, 0] = 1.0
    return Samples(samples.pairs, samples.completions, rewards)


def test_dpo_first_loss_is_ln2_with_dropout_and_no_heldout_pair_does_not_crash():
    # DPO with GPTConfig(dropout=0.1): the first loss was 0.69397, not ln 2 (TRL: DPOConfig.disable_dropout=True).
    # And an untrained model answers no held-out prompt right, so no held-out prompt yields a pair: dpo.train
    # crashed in torch.cat; now those metrics are NaN (documented) and n_heldout_pairs is 0.
    model = _tiny(dropout=0.1)
    config = dpo.Config(seed=0, samples_per_prompt=2, steps=1, eval_every=1, batch_size=8, nll_weight=0.0,
                        eval_prompts=8, eval_samples=1, progress_bar=False)
    history = dpo.train(config, ref_model=model, task=TASK, samples=_fabricated_samples(model))
    assert history["loss"][0] == pytest.approx(LN2, abs=1e-6)
    assert history["n_heldout_pairs"] == 0
    assert all(math.isnan(v) for v in history["heldout_pairs_before"].values())
    assert all(math.isnan(v) for v in history["heldout_pairs_after"].values())


def test_disable_dropout_sets_every_rate_to_zero_and_changes_nothing_at_zero():
    model = disable_dropout(_tiny(dropout=0.1))
    assert model.config.dropout == 0.0 and all(m.p == 0.0 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    x = TASK.prompts(TASK.split("train")[:3])
    assert torch.equal(model.train()(x), model.eval()(x))  # train and eval mode now compute the same


# ---- 2. a per-sequence value is never broadcast silently --------------------------------------------


def test_clipped_surrogate_refuses_a_per_sequence_advantage_over_a_square_token_tensor():
    # GRPO with B answers of L = B tokens: (B,) advantages over (B, L) gave token j answer j's advantage.
    logp = torch.log(t([[1.0, 1.0, 1.2]] * 3))
    old, adv = torch.zeros(3, 3, dtype=F64), t([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"advantages\[:, None\]"):
        clipped_surrogate(logp, old, adv)
    right = clipped_surrogate(logp, old, adv[:, None])
    assert torch.allclose(right[0], t([-1.0, -1.0, -1.2]))  # by hand: -min(r A, clip(r) A) with A = 1, r = 1, 1, 1.2
    for fn in (lambda: pg_loss(logp, adv), lambda: surrogate_loss(logp, old, adv), lambda: clip_active(logp, old, adv)):
        with pytest.raises(ValueError, match="advantages"):
            fn()
    assert pg_loss(logp, t(2.0)).item() == pytest.approx(-2.0 * logp.mean().item())  # a 0-d scalar still broadcasts


def test_reward_model_loss_refuses_a_scalar_heads_b1_output():
    # (B, 1) against (B,) broadcast to (B, B), mean 1.497; TRL's RewardTrainer squeezes the head's (B, 1) first
    r_chosen, r_rejected = t([[2.0], [0.0]]), t([1.0, 3.0])
    with pytest.raises(ValueError, match="squeeze"):
        reward_model_loss(r_chosen, r_rejected)
    with pytest.raises(ValueError, match="squeeze"):
        bradley_terry(r_chosen, r_rejected)
    with pytest.raises(ValueError, match="margin"):
        reward_model_loss(t([2.0, 0.0]), r_rejected, margin=t([[0.0], [0.5]]))
    losses = reward_model_loss(r_chosen.squeeze(-1), r_rejected)
    assert torch.allclose(losses, t([math.log1p(math.exp(-1.0)), math.log1p(math.exp(3.0))]))  # [0.313, 3.049]
    assert losses.shape == (2,)


def test_grpo_loss_refuses_advantages_that_are_not_one_per_answer():
    data = rollout.collect(_tiny(), _tiny(), TASK, TASK.split("train")[:2], 2, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="grpo_loss: advantages"):
        grpo.grpo_loss(data.old_logp, data, torch.zeros(4, 1), grpo.Config())


# ---- 3. a NaN reward does not spread ------------------------------------------------------------------


def _trl_nan_group(r, eps=1e-4):
    """TRL 1.16's rule written out: scored answers only for the mean and the unbiased std, advantage 0 for NaN."""
    scored = [x for x in r if not math.isnan(x)]
    mean = sum(scored) / len(scored)
    std = math.sqrt(sum((x - mean) ** 2 for x in scored) / (len(scored) - 1))
    return [0.0 if math.isnan(x) else (x - mean) / (std + eps) for x in r]


def test_group_relative_leaves_an_unscorable_answer_out_of_its_group():
    # huggingface/trl@v1.16.0 grpo_trainer.py: nanmean / nanstd, then nan_to_num(advantages, 0): [0, 0.577, -1.155, 0.577]
    out = group_relative(t([[NAN, 1.0, 0.0, 1.0], [2.0, 0.0, NAN, NAN]]))
    assert torch.allclose(out[0], t(_trl_nan_group([NAN, 1.0, 0.0, 1.0])), atol=1e-12)
    assert torch.allclose(out[0], t([0.0, 0.577, -1.155, 0.577]), atol=1e-3)
    assert torch.allclose(out[1], t(_trl_nan_group([2.0, 0.0, NAN, NAN])), atol=1e-12)
    # Dr. GRPO (no std) and RLOO (the mean of the OTHER scored answers), by hand
    assert torch.allclose(group_relative(t([[NAN, 1.0, 0.0, 1.0]]), scale=False), t([[0.0, 1 / 3, -2 / 3, 1 / 3]]))
    loo = group_relative(t([[NAN, 1.0, 0.0, 1.0]]), scale=False, leave_one_out=True)
    assert torch.allclose(loo, t([[0.0, 0.5, -1.0, 0.5]]))
    # fewer than two scored answers, or none: no spread, all 0; and a group without NaN is unchanged
    assert torch.equal(group_relative(t([[NAN, 1.0, NAN], [NAN, NAN, NAN]])), torch.zeros(2, 3, dtype=F64))
    clean = t([[1.0, 0.0, 1.0, 1.0]])
    assert torch.equal(group_relative(torch.cat([clean, t([[NAN, 0.0, 0.0, 1.0]])]))[0], group_relative(clean)[0])


def _some_nan_reward(pairs, completions):
    """A reward function that cannot score every third answer (returns NaN there), 1 / 0 elsewhere."""
    r = (completions[:, 0] % 2 == 0).float()
    r[::3] = NAN
    return r


def test_nan_rewards_through_collect_leave_the_grpo_loss_and_the_weights_finite():
    policy, ref = _tiny(seed=0).train(), _tiny(seed=0).eval()
    data = rollout.collect(policy, ref, TASK, TASK.split("train")[:4], 6, torch.Generator().manual_seed(0),
                           reward_fn=_some_nan_reward)
    assert bool(torch.isnan(data.rewards).any())
    advantages = grpo.advantages_of(data)
    assert bool(torch.isfinite(advantages).all()) and bool((advantages[torch.isnan(data.rewards)] == 0).all())
    logp = sequence_logprobs(policy, data.tokens, data.completion_mask)["per_token"]
    loss, _ = grpo.grpo_loss(logp, data, advantages, grpo.Config())
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
    loss.backward()
    optimizer.step()
    assert math.isfinite(loss.item()) and all(bool(torch.isfinite(p).all()) for p in policy.parameters())


def test_a_reward_function_with_the_wrong_number_of_rewards_is_refused():
    # huggingface/trl issue #6533: a reward function returning fewer rewards than completions
    with pytest.raises(ValueError, match=r"returned 7 rewards .* expected 8"):
        rollout.collect(_tiny(), _tiny(), TASK, TASK.split("train")[:4], 2, reward_fn=lambda p, c: torch.zeros(7))
    with pytest.raises(ValueError, match=r"expected 8 of shape \(8,\)"):  # (M, 1) is refused too, not broadcast
        rollout.collect(_tiny(), _tiny(), TASK, TASK.split("train")[:4], 2, reward_fn=lambda p, c: torch.zeros(8, 1))


def test_rlhf_and_normalize_refuse_nan_rewards():
    mask = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="scores hold NaN"):
        rlhf.shaped_rewards(t([1.0, NAN]), torch.zeros(2, 3, dtype=F64), torch.zeros(2, 3, dtype=F64), mask, 0.1)
    with pytest.raises(ValueError, match="normalize: x holds 1 NaN"):
        normalize(t([1.0, NAN, 0.0]))


def test_make_pairs_never_chooses_or_rejects_an_unscorable_answer():
    completions = torch.arange(2 * 3 * 2).view(2, 3, 2)
    samples = Samples(TASK.split("train")[:2], completions, torch.tensor([[NAN, 1.0, 0.0], [0.0, NAN, 1.0]]))
    data = dpo.make_pairs(TASK, samples, torch.Generator().manual_seed(0))
    assert torch.equal(data.chosen, completions[[0, 1], [1, 2]]) and torch.equal(data.rejected, completions[[0, 1], [2, 0]])


# ---- 4. precision: sums of log-probs and reward statistics in float32 ----------------------------------


def test_sequence_logprob_sum_of_a_bf16_model_is_computed_in_float32():
    # A bf16 model (as hf.from_hf imports one): the sum of a 240-token answer's log-probs rounded to 4-nat steps
    # (both answers below summed to -668 in bf16) and DPO's logit of the two to 0. TRL upcasts (PR #942).
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=16, block_size=256)).to(torch.bfloat16).eval()
    tokens = torch.randint(0, 16, (2, 250), generator=torch.Generator().manual_seed(0))
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    mask[:, 10:] = True
    with torch.no_grad():
        out = sequence_logprobs(model, tokens, mask)
        logits = model(tokens[:, :-1]).double()  # the same bf16 logits, summed in float64 by hand
    by_hand = logits.log_softmax(-1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
    by_hand = torch.where(mask[:, 1:], by_hand, 0.0).sum(-1)
    assert out["sum"].dtype == torch.float32 and out["per_token"].dtype == torch.float32
    assert torch.allclose(out["sum"].double(), by_hand, atol=1e-3)
    gap = (out["sum"][0] - out["sum"][1]).item()
    assert gap == pytest.approx((by_hand[0] - by_hand[1]).item(), abs=1e-3) and abs(gap) > 2.0


def test_preference_losses_combine_bf16_log_probs_in_float32():
    bf = torch.bfloat16
    pc, pr, rc, rr = (torch.tensor([v], dtype=bf) for v in (-300.0, -1.5, -298.0, -1.5625))
    # by hand: logits = (-300 + 1.5) - (-298 + 1.5625) = -2.0625 (in bf16, -300 + 1.5 rounds to -298: logits -2)
    losses, chosen, rejected = dpo_loss(pc, pr, rc, rr, beta=0.1)
    assert losses.dtype == torch.float32
    assert losses.item() == pytest.approx(math.log1p(math.exp(0.1 * 2.0625)), abs=1e-6)
    kto = kto_loss(pc, rc, torch.tensor([True]), 0.0)
    assert kto.dtype == torch.float32 and kto.item() == pytest.approx(1 / (1 + math.exp(0.1 * -2.0)), abs=1e-6)
    assert reward_model_loss(pc, rc).dtype == torch.float32


def test_reward_statistics_of_bf16_rewards_are_float32():
    r = torch.tensor([[0.1, 0.7, 0.3, 0.9]], dtype=torch.bfloat16)
    assert torch.equal(group_relative(r), group_relative(r.float()))
    assert torch.equal(normalize(r.view(-1)), normalize(r.float().view(-1)))


# ---- 5. empty input: a ValueError naming the argument, the same in every mode ----------------------------


@pytest.mark.parametrize("mode", ["grpo", "dapo", "dr_grpo"])
def test_aggregate_of_a_batch_with_no_rows_raises_in_every_mode(mode):
    # before: grpo NaN, dapo 0, dr_grpo NaN
    with pytest.raises(ValueError, match="aggregate: per_token_loss"):
        aggregate(torch.zeros(0, 4), torch.zeros(0, 4, dtype=torch.bool), mode)


def test_empty_batches_raise_or_give_an_empty_result():
    empty = torch.zeros(0)
    for fn, name in ((lambda: pg_loss(empty, empty), "pg_loss: logp"), (lambda: value_loss(empty, empty), "value_loss: values"),
                     (lambda: clip_fraction(empty, empty), "clip_fraction: logp")):
        with pytest.raises(ValueError, match=name):
            fn()
    no_pairs = torch.zeros(0, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="collect: pairs"):
        rollout.collect(_tiny(), _tiny(), TASK, no_pairs, 2)
    with pytest.raises(ValueError, match="evaluate: pairs"):
        sampling.evaluate(_tiny(), TASK, no_pairs)
    with pytest.raises(ValueError, match="kl_to_reference: pairs"):
        rollout.kl_to_reference(_tiny(), _tiny(), TASK, no_pairs)
    prompts, completions = TASK.prompts(no_pairs), torch.zeros(0, TASK.max_new_tokens, dtype=torch.long)
    assert rollout.reference_logprobs(_tiny(), prompts, completions).shape == (0,)  # was a crash in torch.cat
    assert reward_model.score(reward_model.build_reward_model(_tiny()), prompts, completions).shape == (0,)


# ---- 6. which KL the k3 term descends; whose adaptive-KL rule is whose -------------------------------------


def _expected_gradient(estimator, theta, logq, beta=0.04):
    """Exact on-policy expected gradient of beta * estimator over a categorical, by enumeration:
    sum_y pi(y) grad[beta * estimator(log pi(y), log q(y))], the samples' weights pi(y) held fixed."""
    logp = theta.log_softmax(-1)
    weights = logp.exp().detach()
    (g,) = torch.autograd.grad((weights * beta * estimator(logp, logq)).sum(), theta)
    return g


def test_grpo_k3_term_descends_kl_from_the_reference_on_a_categorical():
    # NeMo-RL PR #2506: on-policy, E[grad k3] = grad KL(pi_ref || pi), not grad KL(pi || pi_ref);
    # k1's expected gradient is 0; k2 and TRL's ratio-weighted k3 give grad KL(pi || pi_ref).
    theta = t([1.0, -0.5, 0.3, 2.0]).requires_grad_()
    logq = t([0.1, 0.2, 0.3, 0.4]).log()
    beta = 0.04

    def grad_of(f):
        (g,) = torch.autograd.grad(f(theta), theta)
        return g

    forward = grad_of(lambda th: beta * kl_categorical(th, logq))  # grad beta KL(pi || pi_ref)
    reverse = grad_of(lambda th: beta * kl_categorical(logq, th))  # grad beta KL(pi_ref || pi)
    k3 = _expected_gradient(lambda lp, lq: kl_estimate(lp, lq, "k3"), theta, logq)
    assert torch.allclose(k3, reverse, atol=1e-15) and not torch.allclose(k3, forward, atol=1e-3)
    k2 = _expected_gradient(lambda lp, lq: kl_estimate(lp, lq, "k2"), theta, logq)
    assert torch.allclose(k2, forward, atol=1e-15)
    k1 = _expected_gradient(lambda lp, lq: kl_estimate(lp, lq, "k1"), theta, logq)
    assert torch.allclose(k1, torch.zeros(4, dtype=F64), atol=1e-15)
    ratio_k3 = _expected_gradient(lambda lp, lq: (lp - lp.detach()).exp() * kl_estimate(lp, lq, "k3"), theta, logq)
    assert torch.allclose(ratio_k3, forward, atol=1e-15)  # TRL's use_bias_correction_kl=True
    assert "KL(pi_ref || pi)" in grpo.__doc__ and "KL(pi_ref || pi)" in grpo.grpo_loss.__doc__


def test_proportional_kl_is_ziegler_et_al_rule_and_adaptive_kl_the_ppo_papers():
    # Ziegler et al. 2019 sec. 2.2 (TRL 0.x's AdaptiveKLController): beta *= 1 + clip(KL / target - 1, -0.2, 0.2) * n / horizon
    c = ProportionalKL(target=6.0, init_beta=0.2, horizon=10000)
    assert c.update(9.0, 256) == pytest.approx(0.2 * (1 + 0.2 * 256 / 10000), rel=1e-15)  # error clipped at +0.2
    beta = c.beta
    assert c.update(5.0, 256) == pytest.approx(beta * (1 - (1 / 6) * 256 / 10000), rel=1e-15)
    a = AdaptiveKL(target=6.0, init_beta=0.2)  # the PPO paper's doubling rule (Schulman et al. 2017, sec. 4)
    assert a.update(9.1) == 0.4 and a.update(3.9) == 0.2
    assert "Ziegler" in rlhf.__doc__ and "Schulman et al. 2017" in rlhf.__doc__
    with pytest.raises(ValueError, match="kl_controller"):
        rlhf.Config(kl_controller="pid")


def test_rlhf_proportional_controller_follows_its_rule():
    model = _tiny()
    config = rlhf.Config(seed=0, iterations=3, prompts_per_iteration=4, samples_per_prompt=2, adaptive_kl=True,
                         kl_controller="proportional", kl_target=0.05, kl_horizon=100.0, eval_every=100, eval_prompts=8,
                         probe_prompts=4, eval_samples=1, progress_bar=False)
    history = rlhf.train(config, ref_model=model, reward_model=reward_model.build_reward_model(model, "sum"), task=TASK)
    for i in range(2):
        error = min(max(history["kl"][i] / 0.05 - 1, -0.2), 0.2)
        assert history["beta"][i + 1] == pytest.approx(history["beta"][i] * (1 + error * 8 / 100.0), rel=1e-12)


def test_sft_reference_model_config_is_untouched_by_disable_dropout():
    # the trainers turn dropout off in their COPY of the model: the caller's model keeps its config
    model = _tiny(dropout=0.1)
    grpo.train(grpo.Config(seed=0, iterations=1, prompts_per_iteration=2, group_size=2, eval_every=100, eval_prompts=4,
                           probe_prompts=2, eval_samples=1, progress_bar=False), ref_model=model, task=TASK)
    assert model.config.dropout == 0.1 and all(m.p == 0.1 for m in model.modules() if isinstance(m, torch.nn.Dropout))
    assert sft.Config().n_layer >= 1  # sft's defaults build dropout-free models (GPTConfig.dropout = 0.0)
    assert GPTConfig(1, 1).dropout == 0.0


def test_token_logprobs_unchanged_at_temperature_one():
    # at T = 1 the logits are used as they are: bit-identical to the untempered path
    model = _tiny()
    data = rollout.collect(model, model, TASK, TASK.split("train")[:2], 2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = model(data.tokens[:, :-1])
    plain = logits.gather(-1, data.tokens[:, 1:, None]).squeeze(-1) - torch.logsumexp(logits, -1)
    assert torch.equal(data.old_logp, torch.where(data.mask, plain, torch.zeros_like(plain)))
    assert F.log_softmax(logits / 1.0, -1).equal(F.log_softmax(logits, -1))  # x / 1.0 is exact in IEEE
