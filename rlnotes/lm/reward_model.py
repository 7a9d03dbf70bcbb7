"""A Bradley-Terry reward model learned from a simulated annotator's rankings (stage 2 of ``08_rlhf``).

Introduced in ``08_rlhf``. InstructGPT's recipe (Ouyang et al. 2022, arXiv:2203.02155, section 3.5),
in the order ``train`` runs it:

1. **Answers.** Sample K answers per training prompt from the SFT model at temperature 1.
2. **Rankings.** The annotator (``annotator.Annotator``: a stated taste, a bias for short answers,
   a share of flipped labels) ranks the K answers; a ranking holds K(K-1)/2 comparisons.
3. **Model.** A copy of the SFT model whose head gives every answer token a scalar; the answer's
   reward is read out from those scalars (``RewardModel``, below).
4. **Loss.** Bradley-Terry (Bradley & Terry 1952) maximum likelihood, ``preference.reward_model_loss``
   = ``-log sigmoid(r(x, y_w) - r(x, y_l))``, averaged over the K(K-1)/2 comparisons of a prompt
   (``ranking_loss``). As in InstructGPT, the K answers of a prompt stay together in one batch: each
   answer is read once, not once per comparison it is in. Comparisons of two identical answers are
   skipped (their gradients cancel exactly).
5. **Normalisation.** A constant ``offset`` is subtracted so that the SFT model's own answers score 0
   on average (InstructGPT normalises on demonstrations; here it makes PPO's first rewards average 0).

The model never sees ``task.reward`` (the verifiable reward). The held-out evaluation compares it with
the annotator's NOISELESS taste on every couple of SFT answers to held-out prompts (couples of equal
taste, e.g. two copies of the right answer, excluded), and ``probe`` checks right answers against
hand-made wrong ones the SFT model rarely writes (what a drifting PPO policy may find).

**Readout: the Q-value of each written token, summed** (``readout="token"``, the default). Three
readouts, measured at the same data and budget (defaults: 2000 prompts, K = 4, 300 steps of 32
prompts; fast: 500 prompts, 40 steps), SFT models and seeds 1, 2, 3, held-out pair accuracy:

    readout                          before   full (300 steps)    fast (40 steps)
    token, from SFT (default)        0.91-0.93   0.951 0.955 0.960   0.909 0.913 0.929
    sum of per-position scalars      0.47-0.49   0.524 0.543 0.586   0.530 0.531 0.535
    last token (InstructGPT, TRL)    0.47-0.52   0.545 0.575 0.587   0.522 0.531 0.563
    token, fresh GPT (no SFT init)   0.48-0.50   0.507 0.537 0.552   -

(sum and last at learning rate 1e-3; at 3e-3 they score 0.52-0.58, and a 1000-step sum run 0.62;
token at 3e-4, its default.) The full budget costs about 10 s of one CPU thread (sampling, ranking
and training), the fast one 1.4 s.
For reference, the SFT model's own log-probability used as a reward scores 0.93-0.96, and the
annotator's noisy labels 0.89-0.91: the model learns more than it was told, by pooling many labels.

Why the scalar heads stay near chance: to judge "65" after "07+58=", a scalar must know the sum. The
SFT model computes each digit of it at the position BEFORE that digit, where it predicts the next
token. A scalar head (``sum``, ``last``) drops the unembedding that reads this prediction out, and
must rebuild "the digit written vs the digit expected" from Bradley-Terry labels alone, one noisy
bit per comparison: with 2 layers, 64 channels and a few hundred steps it does not. The last-token
readout must in addition gather the operands and every answer digit into the EOS position through
attention before it can compare them; in this budget neither gets far. The ``token`` readout keeps the unembedding and reads it AT
the written token, q(x, y_<t)[y_t]: a digit's scalar is computed exactly where the model already
knows which digit is right, each digit gets its own credit, and from the SFT weights the reward
starts as the sum of SFT logits (0.91 before any step). Training then adds what the logits do not
know: CLOSENESS between two wrong answers (wrong-vs-wrong pairs from 0.51-0.62 to 0.63-0.72) and the
+10 slips (``probe``: 0.88 to 0.99). Without the SFT initialisation the same readout is at chance:
here, initialising from SFT is not a detail, it is where the reward model's arithmetic comes from.

Where the reward model is wrong on purpose: among wrong-vs-wrong pairs whose closer answer is LONGER,
the annotator's short bias labels against its own taste, and the reward model learns it (``against_bias``
falls from 1.0 to 0.74-0.89 at the full budget; few such pairs, 27-47 a run).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from rlnotes.preference import reward_model_loss
from rlnotes.utils import seed_everything

from . import sft
from .annotator import Annotator
from .logprobs import collate, masked_sum, sequence_logprobs
from .model import GPT, disable_dropout
from .sampling import sample
from .task import AdditionTask

__all__ = [
    "READOUTS", "Config", "RewardModel", "build_reward_model", "Rankings", "collect_rankings", "ranking_loss", "score",
    "HeldoutPairs", "heldout_pairs", "pair_accuracy", "PROBES", "probe", "train",
]

READOUTS = ("token", "sum", "last")


@dataclass
class Config:
    seed: int = field(default=1, metadata={"help": "seed of the sampled answers, the annotator's draws, the head and training"})
    sft_steps: int = field(default=1300,
                           metadata={"help": "SFT steps when no SFT model is passed to train (one is trained first)"})
    readout: str = field(default="token",
                         metadata={"help": "token (sum of per-token Q-values), sum (of per-position scalars) or last"})
    init_from_sft: bool = field(default=True,
                                metadata={"help": "start from the SFT model's weights (InstructGPT) instead of a fresh GPT"})
    k: int = field(default=4, metadata={"help": "answers sampled per prompt and ranked together (InstructGPT's K)"})
    train_prompts: int = field(default=2000, metadata={"help": "training prompts to sample and rank answers for (0: all 8000)"})
    steps: int = field(default=300, metadata={"help": "gradient steps"})
    batch_size: int = field(default=32, metadata={"help": "prompts per step, each with its k answers and k(k-1)/2 comparisons"})
    learning_rate: float = field(default=3e-4, metadata={"help": "Adam step size at the start (linear decay to 0)"})
    flip_rate: float = field(default=0.1, metadata={"help": "share of the annotator's labels flipped at random"})
    short_bias: float = field(default=0.2,
                              metadata={"help": "probability the annotator prefers the shorter of two wrong numbers"})
    eval_prompts: int = field(default=1000,
                              metadata={"help": "held-out prompts for the held-out pairs and the probe (0: all 2000)"})
    eval_every: int = field(default=50, metadata={"help": "steps between held-out pair accuracy checks (not timed)"})
    num_threads: int = field(default=1, metadata={"help": "torch.set_num_threads; 1 is fastest for this tiny model"})
    progress_bar: bool = field(default=True, metadata={"help": "show a tqdm progress bar"})

    def __post_init__(self):
        if self.readout not in READOUTS:
            raise ValueError(f"reward_model.Config: readout must be one of {', '.join(READOUTS)}, got {self.readout!r}")
        for name in ("sft_steps", "steps", "batch_size", "eval_every", "num_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"reward_model.Config: {name} must be >= 1, got {getattr(self, name)}")
        if self.k < 2:
            raise ValueError(f"reward_model.Config: k must be >= 2 to make comparisons, got {self.k}")
        for name in ("seed", "train_prompts", "eval_prompts"):
            if getattr(self, name) < 0:
                raise ValueError(f"reward_model.Config: {name} must be >= 0, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"reward_model.Config: learning_rate must be > 0, got {self.learning_rate}")
        Annotator(self.flip_rate, self.short_bias)  # checks flip_rate and short_bias


# ---- the model ----------------------------------------------------------------------------------------


class RewardModel(nn.Module):
    """A tiny GPT with a head that gives every answer token a scalar, and a readout of the answer's reward.

    ``rm(prompts (B, P), completions (B, N)) -> (B,)`` rewards, with gradients. ``score`` is the
    no-grad, batched version for evaluation and PPO. The readouts (``per_token`` gives the scalars):

    * ``token``: the head keeps the GPT's shape, C -> V. The scalar of answer token y_t is the head's
      output FOR y_t at the position before it, q(x, y_<t)[y_t] (a Q-value of the token written);
      the reward is their sum. From the SFT model, q starts as the SFT logits.
    * ``sum``: a scalar head C -> 1 at every answer token's own position; the reward is their sum.
    * ``last``: the same scalar head, read at the answer's last token only (EOS, or the last token of
      an answer cut without EOS): InstructGPT's and TRL's reward model.
    """

    def __init__(self, body: GPT, readout: str = "token", eos_id: int = 1):
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"RewardModel: readout must be one of {', '.join(READOUTS)}, got {readout!r}")
        width = body.lm_head.out_features
        if width != (body.config.vocab_size if readout == "token" else 1):
            raise ValueError(f"RewardModel: readout {readout!r} does not fit a head with {width} outputs "
                             "(build_reward_model makes it)")
        self.body, self.readout, self.eos_id = body, readout, eos_id
        self.register_buffer("offset", torch.zeros(()))  # subtracted from every reward (set after training)

    def per_token(self, prompts: torch.Tensor, completions: torch.Tensor):
        """One scalar per answer token -> (values (B, N), mask (B, N): True up to and including EOS)."""
        tokens, mask = collate(prompts, completions, self.eos_id)  # (B, P + N) each
        P = prompts.shape[1]
        if self.readout == "token":  # position t - 1 scores token t: the shift of logprobs.sequence_logprobs
            q = self.body(tokens[:, :-1])  # (B, P + N - 1, V)
            values = q.gather(-1, tokens[:, 1:, None]).squeeze(-1)  # (B, P + N - 1)
            return values[:, P - 1 :], mask[:, P:]
        values = self.body(tokens).squeeze(-1)  # the scalar head: (B, P + N, 1) -> (B, P + N)
        return values[:, P:], mask[:, P:]

    def forward(self, prompts: torch.Tensor, completions: torch.Tensor) -> torch.Tensor:
        values, mask = self.per_token(prompts, completions)  # (B, N) each
        if self.readout == "last":
            last = mask.sum(-1) - 1  # the mask is True on a prefix: (B,)
            reward = values.gather(1, last[:, None]).squeeze(1)
        else:
            reward = masked_sum(values, mask)
        return reward - self.offset  # (B,)


def build_reward_model(sft_model: GPT, readout: str = "token", init_from_sft: bool = True, eos_id: int = 1) -> RewardModel:
    """A copy of the SFT model, or a fresh GPT of its shape, made into a reward model.

    ``sum`` and ``last`` replace the unembedding (C -> V) with a scalar head (C -> 1), initialised like
    the GPT's other linear layers, N(0, 0.02), so rewards start near 0 (InstructGPT: "starting from
    the SFT model with the final unembedding layer removed"). ``token`` keeps the unembedding as its head.
    """
    if readout not in READOUTS:
        raise ValueError(f"build_reward_model: readout must be one of {', '.join(READOUTS)}, got {readout!r}")
    body = copy.deepcopy(sft_model) if init_from_sft else GPT(sft_model.config)
    if readout != "token":
        body.lm_head = nn.Linear(body.config.n_embd, 1)
        nn.init.normal_(body.lm_head.weight, mean=0.0, std=0.02)
        nn.init.zeros_(body.lm_head.bias)
    return RewardModel(body.train().requires_grad_(True), readout, eos_id)


@torch.no_grad()
def score(rm: RewardModel, prompts: torch.Tensor, completions: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Rewards of answers under a reward model, without gradients: prompts (B, P), completions (B, N) -> (B,).

    Completions are generated ids with padding after EOS (``sampling.sample``). The model is put in
    eval mode and restored afterwards; rows are scored in chunks of `batch_size`. No rows (B = 0) give
    an empty (0,) tensor.
    """
    if prompts.dim() != 2 or completions.dim() != 2 or len(prompts) != len(completions):
        raise ValueError(f"score: prompts {tuple(prompts.shape)} and completions {tuple(completions.shape)} "
                         "must be (B, P) and (B, N)")
    was_training = rm.training
    rm.eval()
    out = torch.cat([rm(prompts[i : i + batch_size], completions[i : i + batch_size])
                     for i in range(0, max(len(prompts), 1), batch_size)])  # one (possibly empty) chunk at least
    rm.train(was_training)
    return out


# ---- data: answers and rankings -----------------------------------------------------------------------


@dataclass
class Rankings:
    """Ranked answers: pairs (B, 2), prompts (B, P), completions (B, K, N), order (B, K) best first,
    distinct (B, K(K-1)/2) bool: False where a comparison holds two identical answers (no signal)."""

    pairs: torch.Tensor
    prompts: torch.Tensor
    completions: torch.Tensor
    order: torch.Tensor
    distinct: torch.Tensor

    def __len__(self) -> int:
        return len(self.pairs)


def _sample_k(model, task: AdditionTask, pairs: torch.Tensor, k: int, generator=None) -> torch.Tensor:
    """k answers per prompt at temperature 1: pairs (B, 2) -> completions (B, k, N)."""
    tok = task.tokenizer
    prompts = task.prompts(pairs.repeat_interleave(k, dim=0))  # (B * k, P), each prompt k times in a row
    completions = sample(model, prompts, task.max_new_tokens, 1.0, generator, tok.eos_id, tok.pad_id)
    return completions.view(len(pairs), k, -1)


def collect_rankings(sft_model, annotator: Annotator, pairs: torch.Tensor, k: int, generator=None) -> Rankings:
    """Sample k answers per prompt from the SFT model and have the annotator rank them -> Rankings."""
    if k < 2:
        raise ValueError(f"collect_rankings: k must be >= 2, got {k}")
    task = annotator.task
    completions = _sample_k(sft_model, task, pairs, k, generator)  # (B, k, N)
    order = annotator.rank(pairs, completions, generator)  # (B, k)
    hi, lo = torch.triu_indices(k, k, offset=1)  # rank positions of the comparisons, as in rankings_to_pairs
    rows = torch.arange(len(pairs))[:, None]
    distinct = (completions[rows, order[:, hi]] != completions[rows, order[:, lo]]).any(-1)  # (B, k(k-1)/2)
    return Rankings(pairs, task.prompts(pairs), completions, order, distinct)


def ranking_loss(rewards: torch.Tensor, order: torch.Tensor, weight: torch.Tensor | None = None):
    """Bradley-Terry loss of K ranked answers a prompt -> (loss (scalar), accuracy (scalar)).

    rewards (B, K): the reward model's reward of each answer; order (B, K): the ranking, best first;
    weight (B, K(K-1)/2) bool or float: which comparisons count (default all). The loss is the weighted
    mean of ``reward_model_loss(r_better, r_worse)`` over the K(K-1)/2 comparisons of every prompt, in
    ``rankings_to_pairs``'s order; accuracy is the weighted share with r_better > r_worse.
    """
    if rewards.dim() != 2 or order.shape != rewards.shape:
        raise ValueError(f"ranking_loss: rewards {tuple(rewards.shape)} and order {tuple(order.shape)} must both be (B, K)")
    K = rewards.shape[1]
    hi, lo = torch.triu_indices(K, K, offset=1)
    better, worse = rewards.gather(1, order[:, hi]), rewards.gather(1, order[:, lo])  # (B, K(K-1)/2) each
    weight = torch.ones_like(better) if weight is None else weight.to(better.dtype)
    if weight.shape != better.shape:
        raise ValueError(f"ranking_loss: weight {tuple(weight.shape)} must be (B, K(K-1)/2) = {tuple(better.shape)}")
    total = weight.sum().clamp(min=1e-12)
    loss = (reward_model_loss(better, worse) * weight).sum() / total
    accuracy = ((better > worse).to(weight.dtype) * weight).sum() / total
    return loss, accuracy.detach()


# ---- evaluation: held-out pairs against the noiseless taste ---------------------------------------------


@dataclass
class HeldoutPairs:
    """Every couple of k answers to held-out prompts whose noiseless taste differs: pairs (M, 2)
    operands, prompts (M, P), a and b (M, N), a_better (M,) bool (taste), kind (M,): 0 right vs wrong,
    1 wrong vs wrong (a number on each side), 2 a wrong number vs an answer that is not a number;
    against_bias (M,) bool: two wrong numbers whose closer one is LONGER, where the annotator's short
    bias labels against its own taste."""

    pairs: torch.Tensor
    prompts: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor
    a_better: torch.Tensor
    kind: torch.Tensor
    against_bias: torch.Tensor

    def __len__(self) -> int:
        return len(self.a)


def heldout_pairs(sft_model, annotator: Annotator, pairs: torch.Tensor, k: int, generator=None) -> HeldoutPairs:
    """k answers per prompt (B, 2) from the SFT model, split into all couples; ties in taste dropped."""
    task = annotator.task
    completions = _sample_k(sft_model, task, pairs, k, generator)  # (B, k, N)
    B, _, N = completions.shape
    flat = completions.reshape(B * k, N)
    taste = annotator.taste(pairs.repeat_interleave(k, 0), flat).view(B, k)
    _, digits, is_number = (x.view(B, k) for x in annotator.read(flat))
    i, j = torch.triu_indices(k, k, offset=1)
    keep = taste[:, i] != taste[:, j]  # (B, k(k-1)/2)
    rows = torch.arange(B)[:, None].expand_as(keep)[keep]  # (M,)
    ii, jj = i.expand(B, -1)[keep], j.expand(B, -1)[keep]  # (M,) each
    right = (taste[rows, ii] == 0) | (taste[rows, jj] == 0)
    numbers = is_number[rows, ii] & is_number[rows, jj]
    kind = torch.where(right, 0, torch.where(numbers, 1, 2))
    a_better = taste[rows, ii] > taste[rows, jj]
    better_digits = torch.where(a_better, digits[rows, ii], digits[rows, jj])
    worse_digits = torch.where(a_better, digits[rows, jj], digits[rows, ii])
    against_bias = (kind == 1) & (better_digits > worse_digits)
    return HeldoutPairs(pairs[rows], task.prompts(pairs[rows]), completions[rows, ii], completions[rows, jj],
                        a_better, kind, against_bias)


def pair_accuracy(rewards_a: torch.Tensor, rewards_b: torch.Tensor, data: HeldoutPairs) -> dict:
    """Share of held-out pairs a reward ranks like the noiseless taste (a tie counts as wrong) -> dict.

    ``pair_accuracy`` over all pairs; by kind: ``right_vs_wrong``, ``wrong_vs_wrong``, ``not_a_number``;
    and ``against_bias``, the wrong-vs-wrong pairs whose closer answer is longer (NaN where no pair).
    """
    correct = torch.where(data.a_better, rewards_a > rewards_b, rewards_b > rewards_a).float()  # (M,)
    subsets = {"pair_accuracy": torch.ones_like(data.a_better), "right_vs_wrong": data.kind == 0,
               "wrong_vs_wrong": data.kind == 1, "not_a_number": data.kind == 2, "against_bias": data.against_bias}
    return {name: float(correct[rows].mean()) if bool(rows.any()) else float("nan") for name, rows in subsets.items()}


def _evaluate(rm, data: HeldoutPairs) -> dict:
    return pair_accuracy(score(rm, data.prompts, data.a), score(rm, data.prompts, data.b), data)


@torch.no_grad()
def _baselines(sft_model, annotator: Annotator, data: HeldoutPairs, generator=None) -> dict:
    """Two references on the same held-out pairs: the SFT model's log-probability as a reward, and the
    annotator's own noisy labels (what imitating its labels perfectly would score)."""
    eos = annotator.task.tokenizer.eos_id
    logp = [sequence_logprobs(sft_model, *collate(data.prompts, c, eos))["sum"] for c in (data.a, data.b)]
    labels = annotator.compare(data.pairs, data.a, data.b, generator).float()
    return {"sft_logprob": pair_accuracy(*logp, data), "annotator_labels": pair_accuracy(labels, 1 - labels, data)}


PROBES = ("off_by_one", "off_by_ten", "extra_digit", "dropped_digit", "no_eos")


@torch.no_grad()
def probe(rm: RewardModel, task: AdditionTask, pairs: torch.Tensor) -> dict:
    """Does the reward model put the right answer above hand-made wrong ones? -> {name: share}.

    pairs (B, 2) prompts. Each right answer s (then EOS) is compared with: ``off_by_one`` s + 1,
    ``off_by_ten`` s + 10 (the SFT model's usual slips), and three answers the SFT model almost never
    writes, so the reward model never saw them ranked: ``extra_digit`` (s, then a 7; sums < 100 only),
    ``dropped_digit`` (s without its last digit; sums >= 10 only) and ``no_eos`` (s's digits with no EOS). PPO samples
    from a policy that drifts; a reward model that ranks these wrongly can be exploited.
    """
    prompts, right, sums = task.prompts(pairs), task.correct_completions(pairs), pairs.sum(-1)
    r_right = score(rm, prompts, right)  # (B,)
    wrong = {
        "off_by_one": task.completions(sums + 1),
        "off_by_ten": task.completions(sums + 10),
        "extra_digit": task.completions(torch.where(sums < 100, sums * 10 + 7, 0)),
        "dropped_digit": task.completions(sums // 10),
        "no_eos": torch.where(right == task.tokenizer.eos_id, task.tokenizer.pad_id, right),
    }
    keep = {"extra_digit": sums < 100, "dropped_digit": sums >= 10}
    out = {}
    for name, completions in wrong.items():
        above = (r_right > score(rm, prompts, completions)).float()
        rows = keep.get(name, torch.ones_like(sums, dtype=torch.bool))
        out[name] = float(above[rows].mean())
    return out


def _subset(pairs: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """n rows of `pairs` picked by `seed`, in their original order; all of them when n is 0 or >= len."""
    if n <= 0 or n >= len(pairs):
        return pairs
    return pairs[torch.randperm(len(pairs), generator=torch.Generator().manual_seed(seed))[:n].sort().values]


# ---- training ---------------------------------------------------------------------------------------------


def train(config: Config | None = None, progress=None, *, sft_model=None, task: AdditionTask | None = None) -> dict:
    """Learn a reward model from the annotator's rankings of the SFT model's answers -> history.

    sft_model: the SFT policy (not modified); None trains one first with ``sft.Config(seed=config.seed,
    steps=config.sft_steps)``. history: ``model`` (the RewardModel, eval mode), ``annotator``; one entry
    per periodic evaluation: ``eval_step``, ``loss`` and ``train_pair_accuracy`` (against the annotator's
    noisy labels, averaged since the previous evaluation), ``heldout_pair_accuracy`` (against the
    noiseless taste); then, once: ``heldout_before`` and ``heldout`` (``pair_accuracy`` by kind,
    before and after training), ``probe_before`` and ``probe`` (``probe``: right answers against
    hand-made wrong ones on the same held-out prompts), ``baselines`` (the same for the SFT log-prob as a reward, and for the
    annotator's own noisy labels), ``n_prompts``, ``n_comparisons`` (distinct
    answers), ``n_heldout_pairs``, ``offset``, ``seconds`` (sampling, ranking and training; evaluation
    excluded), ``sft_seconds`` (0 when sft_model is given).
    """
    # seed
    config = config or Config()
    task = task or AdditionTask()
    history = {"sft_seconds": 0.0}
    if sft_model is None:
        sft_history = sft.train(sft.Config(seed=config.seed, steps=config.sft_steps, num_threads=config.num_threads,
                                                      progress_bar=config.progress_bar), task=task)
        sft_model = sft_history["model"]
        history["sft_seconds"] = sft_history["seconds"]
    torch.set_num_threads(config.num_threads)
    generator = seed_everything(config.seed)
    # the annotator and the frozen SFT policy, which make the data below; the reward model to train
    annotator = Annotator(config.flip_rate, config.short_bias, task)
    policy = copy.deepcopy(sft_model).eval()
    rm = disable_dropout(build_reward_model(policy, config.readout, config.init_from_sft, task.tokenizer.eos_id))  # as TRL

    # data: held-out pairs from the SFT model, judged by the noiseless taste (not timed)
    eval_gen = torch.Generator().manual_seed(config.seed + 1)
    eval_pairs = _subset(task.split("heldout"), config.eval_prompts, 0)
    heldout = heldout_pairs(policy, annotator, eval_pairs, config.k, eval_gen)
    history["baselines"] = _baselines(policy, annotator, heldout, eval_gen)
    history["heldout_before"], history["probe_before"] = _evaluate(rm, heldout), probe(rm, task, eval_pairs)

    # training data: answers from the SFT model, ranked by the annotator
    start = time.perf_counter()
    train_pairs = _subset(task.split("train"), config.train_prompts, config.seed)
    data = collect_rankings(policy, annotator, train_pairs, config.k, generator)
    history.update(n_prompts=len(data), n_comparisons=int(data.distinct.sum()), n_heldout_pairs=len(heldout))

    # models and optimizer: Adam on the reward model (built above), learning rate decayed linearly to 0
    optimizer = torch.optim.Adam(rm.parameters(), lr=config.learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 - s / config.steps)
    # storage: the training logs since the last evaluation (history is above)
    logs, seconds = [], 0.0
    B, K = min(config.batch_size, len(data)), config.k
    for step in tqdm(range(1, config.steps + 1), desc=f"reward model ({config.readout})", disable=not config.progress_bar):
        # update: B prompts with their K ranked answers, one Adam step on the ranking loss
        rows = torch.randint(len(data), (B,), generator=generator)
        completions = data.completions[rows].reshape(B * K, -1)  # (B * K, N): every answer read once
        rewards = rm(data.prompts[rows].repeat_interleave(K, 0), completions).view(B, K)
        loss, accuracy = ranking_loss(rewards, data.order[rows], data.distinct[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        logs.append((loss.item(), accuracy.item()))

        # diagnostics, not timed: loss and pair accuracy since the last evaluation, held-out pair accuracy
        if step % config.eval_every == 0 or step == config.steps:
            seconds += time.perf_counter() - start
            record = {"eval_step": step, "loss": sum(x[0] for x in logs) / len(logs),
                      "train_pair_accuracy": sum(x[1] for x in logs) / len(logs),
                      "heldout_pair_accuracy": _evaluate(rm, heldout)["pair_accuracy"]}
            for key, value in record.items():
                history.setdefault(key, []).append(value)
            if progress is not None:
                progress({"stage": "reward_model", **record})
            logs = []
            start = time.perf_counter()

    # normalisation: the SFT model's answers score 0 on average
    flat = data.completions.reshape(len(data) * K, -1)
    rm.offset.fill_(float(score(rm, data.prompts.repeat_interleave(K, 0), flat).mean()))
    seconds += time.perf_counter() - start

    # evaluation, not timed: held-out pairs and the probe, after training
    rm.eval()
    history.update(model=rm, annotator=annotator, heldout=_evaluate(rm, heldout), probe=probe(rm, task, eval_pairs),
                   offset=float(rm.offset), seconds=seconds)
    return history
