"""Supervised fine-tuning (SFT): next-token cross-entropy on a teacher's demonstrations.

Introduced in ``06_dpo``; ``07_grpo`` and ``08_rlhf`` start from the model it returns:

    history = sft.train(sft.Config(seed=1)); model = history["model"]

The teacher (``AdditionTask.teacher``) is wrong on a stated share of its demonstrations, drawn afresh
every time a prompt is shown. A model that fits the teacher well therefore answers right greedily (the
right answer is the most frequent one) but only about as often as the teacher when it SAMPLES: that
gap between greedy and sampled accuracy is the headroom that DPO, GRPO and RLHF then close.

The loss is the mean negative log-likelihood over all completion tokens of the batch (the answer's
digits AND its EOS; never the prompt, never padding).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from rlnotes.utils import seed_everything

from .logprobs import collate, sequence_logprobs, token_mean_nll
from .model import GPT, GPTConfig
from .sampling import evaluate
from .task import AdditionTask

__all__ = ["Config", "build_model", "sft_loss", "final_evaluation", "reference_model", "train"]


@dataclass
class Config:
    seed: int = field(default=1, metadata={"help": "seed of the model's initialisation, the teacher and sampling"})
    steps: int = field(default=1300, metadata={"help": "gradient steps"})
    batch_size: int = field(default=256, metadata={"help": "demonstrations per step (prompts drawn from the training split)"})
    learning_rate: float = field(default=3e-3, metadata={"help": "AdamW peak step size (cosine decay to 10% of it)"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    wrong_rate: float = field(default=0.3, metadata={"help": "share of the teacher's demonstrations that are wrong, in [0, 1]"})
    n_layer: int = field(default=2, metadata={"help": "transformer blocks"})
    n_head: int = field(default=4, metadata={"help": "attention heads"})
    n_embd: int = field(default=64, metadata={"help": "channels of the residual stream"})
    eval_every: int = field(default=250, metadata={"help": "steps between greedy accuracy checks on 500 held-out prompts"})
    eval_samples: int = field(default=4, metadata={"help": "answers sampled per held-out prompt for the final sampled accuracy"})
    num_threads: int = field(default=1, metadata={"help": "torch.set_num_threads; 1 is fastest for this tiny model"})
    progress_bar: bool = field(default=True, metadata={"help": "show a tqdm progress bar"})

    def __post_init__(self):
        for name in ("steps", "batch_size", "n_layer", "n_head", "n_embd", "eval_every", "eval_samples", "num_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"sft.Config: {name} must be >= 1, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"sft.Config: seed must be >= 0, got {self.seed}")
        if not 0.0 <= self.wrong_rate <= 1.0:
            raise ValueError(f"sft.Config: wrong_rate must be in [0, 1], got {self.wrong_rate}")
        if not self.learning_rate > 0 or self.weight_decay < 0:
            raise ValueError("sft.Config: learning_rate must be > 0 and weight_decay >= 0, "
                             f"got {self.learning_rate}, {self.weight_decay}")


def build_model(config: Config, task: AdditionTask) -> GPT:
    """A fresh tiny GPT sized for `task` (vocabulary and block size) with `config`'s shape."""
    return GPT(GPTConfig(task.tokenizer.vocab_size, task.block_size, config.n_layer, config.n_head, config.n_embd))


def sft_loss(model, tokens: torch.Tensor, completion_mask: torch.Tensor) -> torch.Tensor:
    """Mean NLL over every completion token of the batch: tokens, completion_mask (B, L) -> scalar.

    Each TOKEN weighs the same (a long answer counts more than a short one), as in the usual
    ``cross_entropy(..., ignore_index=pad)`` of SFT trainers.
    """
    return token_mean_nll(sequence_logprobs(model, tokens, completion_mask))


def final_evaluation(model, task: AdditionTask, generator: torch.Generator, eval_samples: int = 4, pairs=None) -> dict:
    """Held-out accuracy, greedy and sampled at temperature 1 (eval_samples answers per prompt).

    pairs: (B, 2) prompts to evaluate on; all held-out prompts by default.
    """
    heldout = task.split("heldout") if pairs is None else pairs
    return {
        "greedy_accuracy": evaluate(model, task, heldout, temperature=0.0),
        "sampled_accuracy": evaluate(model, task, heldout, 1.0, generator, samples_per_prompt=eval_samples),
    }


def reference_model(model, config, task: AdditionTask, progress=None):
    """The model an alignment method starts from -> (model, history).

    `model` if given (history is then empty); otherwise an SFT model trained with
    ``Config(seed=config.seed, steps=config.sft_steps)``, the other method's config supplying those two
    fields and ``num_threads`` / ``progress_bar``; history["sft"] then holds its held-out accuracies and
    training seconds (what ``rlnotes lm dpo|grpo|rlhf`` print beside their own numbers).
    """
    if model is not None:
        return model, {}
    sft_config = Config(seed=config.seed, steps=config.sft_steps, num_threads=config.num_threads,
                        progress_bar=config.progress_bar)
    sft_history = train(sft_config, progress=progress, task=task)
    return sft_history["model"], {"sft": {k: sft_history[k] for k in ("greedy_accuracy", "sampled_accuracy", "seconds")}}


def train(config: Config | None = None, progress=None, *, task: AdditionTask | None = None) -> dict:
    """Train a tiny GPT on the noisy teacher -> history, the model under "model".

    The contract of every LM trainer (``rlnotes lm <name>``): ``before`` and ``after`` (held-out greedy
    and sampled accuracy of the untrained and of the trained model), ``seconds`` (training time).

    history: ``step``, ``loss`` (a list each, one entry per step); ``eval_step``, ``eval_greedy_accuracy``
    (periodic greedy accuracy on 500 held-out prompts); and the final ``greedy_accuracy``,
    ``sampled_accuracy`` (all held-out prompts), ``seconds`` (training only), ``num_parameters``.
    `progress`, if given, is called with a dict at every periodic evaluation (the CLI prints it).
    """
    # seed
    config = config or Config()
    task = task or AdditionTask()
    torch.set_num_threads(config.num_threads)
    generator = seed_everything(config.seed)

    # data: the train split, and 500 held-out prompts to probe (their own generator: the seed above is untouched)
    train_pairs, heldout = task.split("train"), task.split("heldout")
    probe = heldout[torch.randperm(len(heldout), generator=torch.Generator().manual_seed(0))[:500]]

    # models and optimizer: the tiny GPT, AdamW with a cosine schedule
    model = build_model(config, task)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(  # cosine from 1 to 0.1 of the peak
        optimizer, lambda s: 0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * s / config.steps)).item())
    )
    # storage
    history = {"step": [], "loss": [], "eval_step": [], "eval_greedy_accuracy": []}

    seconds = 0.0
    start = time.perf_counter()
    for step in tqdm(range(1, config.steps + 1), desc="SFT", disable=not config.progress_bar):
        # update: a minibatch of train prompts with fresh teacher answers, one AdamW step
        pairs = train_pairs[torch.randint(len(train_pairs), (config.batch_size,), generator=generator)]  # (B, 2)
        completions, _ = task.teacher(pairs, config.wrong_rate, generator)  # (B, N), fresh noise every time
        tokens, mask = collate(task.prompts(pairs), completions, task.tokenizer.eos_id)  # (B, L)
        loss = sft_loss(model, tokens, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        # diagnostics: the loss of every step
        history["step"].append(step)
        history["loss"].append(loss.item())

        if step % config.eval_every == 0 or step == config.steps:  # not timed
            seconds += time.perf_counter() - start
            # evaluation: greedy accuracy on the 500 held-out probe prompts
            accuracy = evaluate(model, task, probe, temperature=0.0)
            history["eval_step"].append(step)
            history["eval_greedy_accuracy"].append(accuracy)
            if progress is not None:
                progress({"stage": "sft", "step": step, "loss": loss.item(), "greedy_accuracy": accuracy})
            start = time.perf_counter()
    seconds += time.perf_counter() - start

    model.eval()
    history.update(final_evaluation(model, task, generator, config.eval_samples))
    history["after"] = {k: history[k] for k in ("greedy_accuracy", "sampled_accuracy")}
    history["before"] = final_evaluation(build_model(config, task), task, torch.Generator().manual_seed(config.seed + 2),
                                         1, task.split("heldout"))  # the untrained model: 0 (it never writes digits + EOS)
    history.update(seconds=seconds, num_parameters=model.num_parameters(), final_loss=history["loss"][-1], model=model)
    return history
