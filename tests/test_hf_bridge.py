"""The bridge to real models: the course's model, data, losses and rewards in transformers and TRL.

Skipped unless the optional extra ``hf`` is installed (``pip install -c constraints.txt -e ".[test,hf]"``,
which ``make test`` does). Checked against the versions pinned in constraints.txt (transformers 5.24.0,
trl 1.16.0, datasets 5.2.0, accelerate 1.15.0); docs/scaling.md maps every option. Nothing is
downloaded: models are built from configs, saved to and loaded from temporary directories.

Every test starts from one small SFT model trained here with ``rlnotes.lm.sft`` (300 steps).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local: a stray hub call fails at once

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("datasets")
pytest.importorskip("accelerate")
trl = pytest.importorskip("trl")

# transformers 5.24 warns about its own deprecated alias when TRL asks whether checkpointing is on
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

from datasets import load_dataset  # noqa: E402
from transformers import GPT2LMHeadModel  # noqa: E402
from trl import DPOConfig, DPOTrainer, GRPOConfig, GRPOTrainer  # noqa: E402

from rlnotes.advantages import group_relative  # noqa: E402
from rlnotes.divergences import kl_estimate  # noqa: E402
from rlnotes.lm import export, hf, sft  # noqa: E402
from rlnotes.lm.logprobs import collate, sequence_logprobs  # noqa: E402
from rlnotes.lm.sampling import evaluate, sample  # noqa: E402
from rlnotes.lm.task import AdditionTask  # noqa: E402
from rlnotes.objectives import aggregate, clipped_surrogate, probability_ratio  # noqa: E402
from rlnotes.preference import dpo_loss  # noqa: E402
from rlnotes.utils import course_seed  # noqa: E402

HERE = Path(__file__).resolve().parent
SFT_STEPS = 300  # greedy ~0.8, sampled ~0.35 on held-out prompts: room for GRPO to show a gain quickly
N_PAIRS = 64  # preference pairs of the DPO tests
# Bounds on trained runs: each held on 15 runs (seed offsets 0-4 x torch kernels native, default, avx2) with a
# margin below the worst; the measured ranges are in benchmarks/claims.md (tools/claims.py).
PERTURBED_LOGIT_BOUND = 0.03  # mean |DPO logit| of the perturbed policy on 16 pairs; worst 0.134


def _common_args(**kwargs) -> dict:
    """TrainingArguments every bridge run shares: float32 on the CPU, no checkpointing, no files, no hub."""
    return dict(
        bf16=False,  # TRL defaults to bf16 when fp16 is off
        activation_checkpointing=False,  # TRL defaults to (gradient) checkpointing
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        **kwargs,
    )


# ---- fixtures: one SFT model, its preference pairs -----------------------------------------------------


@pytest.fixture(scope="module")
def task():
    return AdditionTask()


@pytest.fixture(scope="module")
def sft_model(task):
    torch.set_num_threads(1)
    config = sft.Config(seed=course_seed(1), steps=SFT_STEPS, eval_every=SFT_STEPS, eval_samples=1, progress_bar=False)
    model = sft.train(config, task=task)["model"]
    return model.eval()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("hf_bridge")


@pytest.fixture(scope="module")
def sft_dir(sft_model, workdir):
    """The SFT model as a transformers checkpoint on disk (what a real run loads by path)."""
    path = workdir / "sft_gpt2"
    hf.to_hf(sft_model).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pairs_data(task):
    """64 training prompts, the right answer chosen and a teacher's mistake rejected (tensors)."""
    g = torch.Generator().manual_seed(0)
    train = task.split("train")
    pairs = train[torch.randperm(len(train), generator=g)[:N_PAIRS]]
    rejected, _ = task.teacher(pairs, wrong_rate=1.0, generator=g)
    return SimpleNamespace(pairs=pairs, chosen=task.correct_completions(pairs), rejected=rejected)


@pytest.fixture(scope="module")
def pairs_jsonl(task, pairs_data, workdir):
    """The pairs as rlnotes.lm.export writes them for TRL."""
    records = export.trl_preference(export.preference_records(task, pairs_data))
    return export.write_jsonl(records, workdir / "pairs.jsonl")


def _load_pairs(pairs_jsonl, workdir):
    return load_dataset("json", data_files=str(pairs_jsonl), cache_dir=str(workdir / "datasets_cache"))["train"]


def _perturbed(model, std=0.02, seed=0):
    """A copy of `model` with Gaussian noise on every weight (a policy that has moved off the reference)."""
    g = torch.Generator().manual_seed(seed)
    out = copy.deepcopy(model)
    with torch.no_grad():
        for p in out.parameters():
            p.add_(std * torch.randn(p.shape, generator=g))
    return out


# ---- the model and the tokenizer ------------------------------------------------------------------------


def test_to_hf_gives_the_same_logits_and_round_trips(sft_model, task):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(task.tokenizer.vocab_size, (32, task.block_size), generator=g)
    for model in (sft_model, _perturbed(sft_model, std=0.1)):
        hf_model = hf.to_hf(model).eval()
        assert hf_model.config.activation_function == "gelu" and not hf_model.config.tie_word_embeddings
        with torch.no_grad():
            diff = (model(ids) - hf_model(ids).logits).abs().max().item()
            model64 = copy.deepcopy(model).double()
            diff64 = (model64(ids) - hf.to_hf(model64).eval()(ids).logits).abs().max().item()
        print(f"to_hf logits max |diff| float32 {diff:.1e}, float64 {diff64:.1e}")
        # float64: the same computation, so only rounding is left. float32: logits reach ~8 here, and the
        # course model alone is 1.5e-5 off its own float64 logits, so 1e-5 would test rounding, not the map.
        assert diff64 < 1e-10, diff64  # measured 7e-15
        assert diff < 5e-5, diff  # measured 3e-6 to 9e-6 (attention "sdpa" and "eager" alike)
        back = hf.from_hf(hf_model)
        for (name, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items(), strict=True):
            assert torch.equal(a, b), name  # the round trip is exact: only copies and transposes

    # The GELU variant matters: GPT-2's default tanh approximation ("gelu_new") misses the tolerance.
    hf_model = hf.to_hf(sft_model).eval()
    hf_model.config.activation_function = "gelu_new"
    tanh_model = type(hf_model)(hf_model.config)
    tanh_model.load_state_dict(hf_model.state_dict())
    with torch.no_grad():
        tanh_diff = (sft_model(ids) - tanh_model.eval()(ids).logits).abs().max().item()
    print(f"gelu_new logits max |diff| {tanh_diff:.2e}")
    assert tanh_diff > 1e-4, tanh_diff  # measured 7e-3
    with pytest.raises(ValueError, match="gelu"):
        hf.from_hf(tanh_model)


def test_hf_generate_matches_course_generate(sft_model, task):
    """Greedy decoding through transformers' generate (the path GRPOTrainer samples with) = the course's."""
    pairs = task.split("heldout")[:64]
    prompts = task.prompts(pairs)
    ours = sample(sft_model, prompts, task.max_new_tokens, temperature=0.0)
    hf_model = hf.to_hf(sft_model).eval()
    out = hf_model.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=task.max_new_tokens, do_sample=False)
    theirs = out[:, prompts.shape[1] :]
    theirs = torch.cat([theirs, torch.zeros(len(theirs), task.max_new_tokens - theirs.shape[1], dtype=torch.long)], 1)
    assert torch.equal(ours, theirs)


def test_hf_tokenizer_has_the_course_ids(task):
    tok = task.tokenizer
    fast = hf.hf_tokenizer(tok)
    assert (fast.pad_token_id, fast.eos_token_id, fast.bos_token_id) == (tok.pad_id, tok.eos_id, None)
    assert len(fast) == tok.vocab_size
    for text in ("07+58=", "99+99=", "0", "198"):
        assert fast(text)["input_ids"] == tok.encode(text)
        assert fast(text + fast.eos_token)["input_ids"] == tok.encode(text, eos=True)  # how TRL appends EOS
    ids = tok.encode("07+58=65", eos=True) + [tok.pad_id]
    assert fast.decode(ids, skip_special_tokens=True) == tok.decode(ids) == "07+58=65"
    with pytest.raises(Exception):
        fast("07*58=")  # '*' is not in the vocabulary; the course tokenizer raises too


# ---- DPO: TRL's loss on the course's pairs ----------------------------------------------------------------


def _dpo_trainer(policy, reference, dataset, task, workdir, **config):
    args = DPOConfig(output_dir=str(workdir / "dpo"), per_device_train_batch_size=16, max_length=None,
                     **_common_args(**config))
    return DPOTrainer(model=hf.to_hf(policy), ref_model=hf.to_hf(reference), args=args, train_dataset=dataset,
                      processing_class=hf.hf_tokenizer(task.tokenizer))


def _trl_dpo_batch_loss(trainer, rows):
    """TRL's loss on a batch of the prepared data set, through its own collator and compute_loss."""
    batch = trainer.data_collator([trainer.train_dataset[i] for i in rows])
    with torch.no_grad():
        return trainer.compute_loss(trainer.model, batch).item()


def _course_logps(model, task, pairs_data, rows):
    """Course log-probs of chosen and rejected: dicts with "sum" and "mean" (B,) and the chosen NLL."""
    prompts = task.prompts(pairs_data.pairs[rows])
    out = {}
    with torch.no_grad():
        for side in ("chosen", "rejected"):
            tokens, mask = collate(prompts, getattr(pairs_data, side)[rows], task.tokenizer.eos_id)
            out[side] = sequence_logprobs(model, tokens, mask)
    out["nll"] = -out["chosen"]["per_token"].sum() / out["chosen"]["mask"].sum()  # token mean over the batch
    return out


# (TRL loss_type list, loss_weights, label_smoothing) -> the course's dpo_loss(loss_type, ...) (+ w * NLL)
DPO_CASES = {
    "sigmoid": (["sigmoid"], None, 0.0),
    "hinge": (["hinge"], None, 0.0),
    "ipo": (["ipo"], None, 0.0),
    "robust": (["robust"], None, 0.1),
    "sigmoid+nll": (["sigmoid", "sft"], [1.0, 0.5], 0.0),  # RPO: TRL 1.x's replacement of rpo_alpha=0.5
}


@pytest.mark.parametrize("case", [pytest.param(c, marks=[pytest.mark.trained] if c == "sigmoid" else []) for c in DPO_CASES])
def test_trl_dpo_loss_equals_course_dpo_loss(case, sft_model, task, pairs_data, pairs_jsonl, workdir, measured):
    loss_types, weights, ls = DPO_CASES[case]
    beta = 0.1
    dataset = _load_pairs(pairs_jsonl, workdir)
    policy = _perturbed(sft_model)
    trainer = _dpo_trainer(policy, sft_model, dataset, task, workdir, loss_type=loss_types, loss_weights=weights,
                           beta=beta, label_smoothing=ls)
    rows = list(range(16))
    assert [trainer.train_dataset[i]["prompt"] for i in rows] == task.prompt_texts(pairs_data.pairs[rows])

    pol, ref = _course_logps(policy, task, pairs_data, rows), _course_logps(sft_model, task, pairs_data, rows)
    kind = "mean" if loss_types[0] == "ipo" else "sum"  # TRL's IPO averages log-probs over the answer's tokens
    losses, _, _ = dpo_loss(pol["chosen"][kind], pol["rejected"][kind], ref["chosen"][kind], ref["rejected"][kind],
                            beta=beta, loss_type=loss_types[0], label_smoothing=ls)
    ours = losses.mean().item() + (weights[1] * pol["nll"].item() if "sft" in loss_types else 0.0)
    theirs = _trl_dpo_batch_loss(trainer, rows)
    print(f"DPO {case}: TRL {theirs:.7f} course {ours:.7f} |diff| {abs(theirs - ours):.1e}")
    assert abs(theirs - ours) < 1e-5, (theirs, ours)  # measured 0 to 6e-8

    # Step 0 of a run: policy == reference, so every log-ratio is 0 and the sigmoid loss is ln 2. The perturbed
    # policy's log-ratios are not 0, so the comparison above is not one of two constants. Its loss may still land
    # near ln 2 (the rows' logits have either sign: 0.7023 on one machine), so the claim is on the logits' size.
    if case == "sigmoid":
        start = _dpo_trainer(sft_model, sft_model, dataset, task, workdir, loss_type=["sigmoid"], beta=beta)
        assert abs(_trl_dpo_batch_loss(start, rows) - math.log(2)) < 1e-6
        logits = beta * ((pol["chosen"]["sum"] - ref["chosen"]["sum"]) - (pol["rejected"]["sum"] - ref["rejected"]["sum"]))
        measured("loss_minus_ln2", theirs - math.log(2))
        assert measured("mean_abs_logit", logits.abs().mean().item()) > PERTURBED_LOGIT_BOUND, logits


def test_trl_sigmoid_dpo_ignores_label_smoothing(sft_model, task, pairs_data, pairs_jsonl, workdir):
    """TRL 1.16 dropped cDPO: its sigmoid loss no longer reads label_smoothing (only robust and exo_pair do).

    The course's dpo_loss("sigmoid", label_smoothing=ls) is cDPO; in TRL 1.16 that takes loss_type="robust"
    only for the unbiased variant, and plain cDPO has no option. docs/scaling.md says so; this pins it.
    """
    dataset = _load_pairs(pairs_jsonl, workdir)
    policy = _perturbed(sft_model)
    rows = list(range(16))
    smoothed = _dpo_trainer(policy, sft_model, dataset, task, workdir, loss_type=["sigmoid"], label_smoothing=0.2)
    pol, ref = _course_logps(policy, task, pairs_data, rows), _course_logps(sft_model, task, pairs_data, rows)
    args = (pol["chosen"]["sum"], pol["rejected"]["sum"], ref["chosen"]["sum"], ref["rejected"]["sum"])
    plain = dpo_loss(*args, beta=0.1, loss_type="sigmoid", label_smoothing=0.0)[0].mean().item()
    cdpo = dpo_loss(*args, beta=0.1, loss_type="sigmoid", label_smoothing=0.2)[0].mean().item()
    theirs = _trl_dpo_batch_loss(smoothed, rows)
    assert abs(theirs - plain) < 1e-5 and abs(theirs - cdpo) > 1e-3, (theirs, plain, cdpo)


# ---- GRPO: TRL's advantages, loss and a short run with the verifiable reward -------------------------------


class _RecordingReward:
    """The task's reward, remembering the last rewards it gave (to recompute the advantages from them)."""

    def __init__(self, task):
        self.reward = hf.addition_reward(task)
        self.__name__ = "addition_correct"
        self.last = None

    def __call__(self, prompts, completions, completion_ids, **kwargs):
        self.last = torch.tensor(self.reward(prompts, completions, completion_ids, **kwargs))
        return self.last.tolist()


def _grpo_trainer(model, task, prompts_dataset, workdir, reward, **config):
    config.setdefault("per_device_train_batch_size", 64)
    args = GRPOConfig(output_dir=str(workdir / "grpo"), num_generations=8, max_completion_length=task.max_new_tokens,
                      **_common_args(**config))
    return GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=prompts_dataset,
                       processing_class=hf.hf_tokenizer(task.tokenizer))


def _one_generation_batch(trainer):
    """One batch as a training step sees it: prompts repeated num_generations times, sampled, scored."""
    inputs = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    return trainer._generate_and_score_completions(inputs)  # internal: where TRL 1.16 forms the advantages


@pytest.mark.parametrize("scale_rewards", ["group", "none", "batch"])
def test_trl_grpo_advantages_equal_group_relative(scale_rewards, sft_model, task, workdir):
    reward = _RecordingReward(task)
    dataset = hf.prompt_dataset(task, task.split("train")[:64])
    trainer = _grpo_trainer(hf.to_hf(sft_model), task, dataset, workdir, reward, scale_rewards=scale_rewards, seed=0)
    batch = _one_generation_batch(trainer)
    rewards = reward.last.view(-1, 8)  # (prompts, G): TRL groups each prompt's G answers together
    assert 0 < rewards.mean() < 1 and bool(((rewards.min(1).values == 0) & (rewards.max(1).values == 1)).any())
    if scale_rewards == "group":
        ours = group_relative(rewards, eps=1e-4, scale=True)
    elif scale_rewards == "none":
        ours = group_relative(rewards, scale=False)  # Dr. GRPO
    else:  # "batch": centred in the group, scaled by the std of the whole batch
        ours = group_relative(rewards, scale=False) / (rewards.std() + 1e-4)
    print(f"advantages {scale_rewards}: max |diff| {(batch['advantages'] - ours.reshape(-1)).abs().max().item():.1e}")
    assert torch.allclose(batch["advantages"], ours.reshape(-1), atol=1e-6), (batch["advantages"], ours)


@pytest.mark.parametrize("loss_type,bias_correction", [("grpo", False), ("dapo", False), ("dr_grpo", False), ("dapo", True)])
def test_trl_grpo_loss_equals_course_objectives(loss_type, bias_correction, sft_model, sft_dir, task, workdir):
    """TRL's GRPO loss = aggregate(clipped_surrogate + beta * k3 KL) of rlnotes.objectives / divergences.

    The policy is moved off the reference (noise on its weights) and the "old" log-probs are moved off
    the policy's, so the clip (epsilon, epsilon_high) and the KL term both act.
    """
    beta, eps, eps_high = 0.04, 0.2, 0.28
    reward = _RecordingReward(task)
    dataset = hf.prompt_dataset(task, task.split("train")[:64])
    trainer = _grpo_trainer(str(sft_dir), task, dataset, workdir, reward, loss_type=loss_type, beta=beta,
                            epsilon=eps, epsilon_high=eps_high, use_bias_correction_kl=bias_correction, seed=0)
    policy = _perturbed(sft_model, std=0.02, seed=1)
    trainer.model.load_state_dict(hf.to_hf(policy).state_dict())
    batch = _one_generation_batch(trainer)  # sampled from the perturbed policy; ref log-probs from the SFT model

    prompts, completions, mask = batch["prompt_ids"], batch["completion_ids"], batch["completion_mask"]
    P = prompts.shape[1]
    tokens, course_mask = collate(prompts, completions, task.tokenizer.eos_id)
    assert torch.equal(course_mask[:, P:].long(), mask.long())  # the same completion tokens, EOS included
    with torch.no_grad():
        logp = sequence_logprobs(policy, tokens, course_mask)["per_token"][:, P - 1 :]  # (B, N)
        ref_logp = sequence_logprobs(sft_model, tokens, course_mask)["per_token"][:, P - 1 :]
    old = (logp + 0.3 * torch.randn(logp.shape, generator=torch.Generator().manual_seed(2))) * mask
    advantages = batch["advantages"][:, None]

    per_token = clipped_surrogate(logp, old, advantages, eps=eps, eps_high=eps_high)
    kl = kl_estimate(logp, ref_logp, "k3")
    if bias_correction:  # TRL's default: the k3 term weighted by the ratio pi / pi_old
        kl = kl * probability_ratio(logp, old)
    ours = aggregate(per_token + beta * kl, mask, mode=loss_type, max_len=task.max_new_tokens).item()

    trainer.current_gradient_accumulation_steps = 1  # set by the training loop; one micro-batch here
    with torch.no_grad():
        theirs = trainer.compute_loss(trainer.model, {**batch, "old_per_token_logps": old}).item()
    print(f"GRPO loss {loss_type} bias_correction={bias_correction}: "
          f"TRL {theirs:.7f} course {ours:.7f} |diff| {abs(theirs - ours):.1e}")
    assert abs(theirs - ours) < 1e-5, (theirs, ours)  # measured 4e-9 to 2e-8


# GRPO from the SFT model on 32 fixed training prompts, 8 answers each, 30 steps, lr 3e-4, beta 0.04: the
# sampled accuracy on those prompts (16 answers each, course sampler) and TRL's logged reward (mean of the
# last 5 steps minus the first 5) rise; worst 0.123 and 0.108.
GRPO_MIN_GAIN, GRPO_MIN_REWARD_GAIN = 0.08, 0.07


@pytest.mark.trained
def test_trl_grpo_run_raises_the_reward(sft_model, sft_dir, task, workdir, measured):
    torch.set_num_threads(1)
    train = task.split("train")
    prompts = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:32]]

    def accuracy(model):
        return evaluate(model, task, prompts, 1.0, torch.Generator().manual_seed(123), samples_per_prompt=16)

    before = accuracy(sft_model)
    trainer = _grpo_trainer(str(sft_dir), task, hf.prompt_dataset(task, prompts), workdir, hf.addition_reward(task),
                            per_device_train_batch_size=32 * 8, learning_rate=3e-4, lr_scheduler_type="constant",
                            max_steps=30, beta=0.04, logging_steps=1, seed=course_seed(0))
    trainer.train()
    after = accuracy(hf.from_hf(trainer.model).eval())  # back in the course model, scored by the course
    logged = [h["reward"] for h in trainer.state.log_history if "reward" in h]
    reward_gain = sum(logged[-5:]) / 5 - sum(logged[:5]) / 5
    print(f"GRPO run: sampled accuracy {before:.3f} -> {after:.3f}; logged reward first 5 -> last 5 gain {reward_gain:.3f}")
    measured("sampled_gain", after - before), measured("logged_reward_gain", reward_gain)
    assert len(logged) == 30
    assert after - before > GRPO_MIN_GAIN, (before, after)
    assert reward_gain > GRPO_MIN_REWARD_GAIN, logged


# ---- more than one process: the same DPO run, data parallel over two processes ---------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _load_run_script():
    spec = importlib.util.spec_from_file_location("hf_dpo_run", HERE / "hf_dpo_run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


DPO_STEPS = 6


def test_dpo_on_two_processes_matches_one_process(sft_dir, pairs_jsonl, pairs_data, task, workdir):
    """accelerate launch, 2 CPU processes (gloo over loopback), 8 pairs each = one process with 16 pairs.

    Measured: the per-step losses agree to 1.2e-7 (float32 all-reduce order; tolerance 1e-5), the final
    weights to 3.3e-7 except the attention key biases (see below), the final log-probs to 1.4e-5 to 2.4e-5.
    """
    run = _load_run_script().run
    one = workdir / "dpo_1proc"
    run(sft_dir, pairs_jsonl, one, per_device_batch=16, steps=DPO_STEPS)

    two = workdir / "dpo_2proc"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(workdir / "hf_home"),  # no user accelerate config, no shared caches
        "TQDM_DISABLE": "1",
    }
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"  # loopback only
    # --multi_gpu is accelerate's torchrun launcher; with use_cpu=True in the training arguments each process
    # runs on the CPU and accelerate picks MULTI_CPU with the gloo backend (`--cpu` alone starts ONE process).
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()),
        str(HERE / "hf_dpo_run.py"),
        "--model", str(sft_dir), "--data", str(pairs_jsonl), "--out", str(two),
        "--per-device-batch", "8", "--steps", str(DPO_STEPS),
    ]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]

    h1 = json.loads((one / "history.json").read_text())
    h2 = json.loads((two / "history.json").read_text())
    assert (h1["num_processes"], h2["num_processes"]) == (1, 2)
    assert h2["backend"] == "gloo", h2
    assert len(h1["loss"]) == len(h2["loss"]) == DPO_STEPS
    assert abs(h1["loss"][0] - math.log(2)) < 1e-6  # step 0: policy == reference
    assert max(abs(a - b) for a, b in zip(h1["loss"], h2["loss"])) < 1e-5, (h1["loss"], h2["loss"])
    assert h1["loss"][-1] != h1["loss"][0]  # it did train

    # The final weights agree, but for one slice: the KEY bias of each attention layer gets an exactly zero
    # gradient (adding b_k shifts all of a query's scores by q.b_k, and softmax ignores a shift), so what it
    # receives is rounding noise, which Adam scales up to steps of ~lr; it does not change the outputs.
    w1, w2 = torch.load(one / "model.pt"), torch.load(two / "model.pt")
    C = w1["transformer.wte.weight"].shape[1]
    key_bias = lambda k, w: torch.cat([w[:C], w[2 * C :]]) if k.endswith("attn.c_attn.bias") else w  # noqa: E731
    weight_diff = max((key_bias(k, w1[k]) - key_bias(k, w2[k])).abs().max().item() for k in w1)
    key_diff = max((w1[k] - w2[k]).abs().max().item() for k in w1)
    loss_diff = max(abs(a - b) for a, b in zip(h1["loss"], h2["loss"]))
    print(f"2 processes vs 1: loss |diff| {loss_diff:.1e}, weights {weight_diff:.1e} (key biases {key_diff:.1e})")
    assert weight_diff < 1e-5  # measured 3.3e-7 (c_attn weights; 1e-7 elsewhere)
    models = []
    for w in (w1, w2):
        m = GPT2LMHeadModel.from_pretrained(sft_dir)
        m.load_state_dict(w)
        models.append(hf.from_hf(m).eval())
    prompts = task.prompts(pairs_data.pairs)
    with torch.no_grad():
        logps = [sequence_logprobs(m, *collate(prompts, pairs_data.chosen, task.tokenizer.eos_id))["sum"] for m in models]
    logp_diff = (logps[0] - logps[1]).abs().max().item()
    print(f"2 processes vs 1: final chosen log-probs |diff| {logp_diff:.1e}")
    assert logp_diff < 2e-4  # measured 1.4e-5 to 2.4e-5 on sums of about -3
