"""Learning from preferences: Bradley-Terry, the reward-model loss, the DPO family and KTO.

Introduced in ``06_dpo`` (DPO, IPO, hinge, robust, KTO) and ``08_rlhf`` (the reward model).

A human (or a noisy teacher) says which of two answers is better. Bradley-Terry turns a reward gap
into a probability of that choice; a reward model is fitted by maximum likelihood on it. DPO skips
the reward model: the optimal KL-regularized policy satisfies ``r(x, y) = beta * log(pi(y|x) /
pi_ref(y|x)) + beta * log Z(x)``, and Z cancels in the reward GAP, so the same likelihood can be
written with log-probabilities of the policy and of the reference model alone.

Inputs named ``policy_*`` / ``ref_*`` are SEQUENCE log-probabilities (the sum over the answer's
tokens), one per pair or example: shape (B,).

Shapes are exact: a scalar head's (B, 1) output is refused against (B,) rewards instead of broadcast to
(B, B) (squeeze it, as TRL's RewardTrainer does). Precision: bf16 or fp16 inputs are combined in float32
(huggingface/trl PR #942 upcasts the log-probs; in bf16 a DPO logit of two 240-token answers rounds to 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _checks

__all__ = ["implicit_reward", "bradley_terry", "reward_model_loss", "dpo_loss", "kto_loss"]


def implicit_reward(policy_logps, ref_logps, beta):
    """DPO's implicit reward ``beta * (log pi(y|x) - log pi_ref(y|x))``, elementwise (any shape, same shape out).

    Introduced in ``06_dpo``: the reward that the KL-regularized optimum pi* implies, up to the
    per-prompt constant ``beta * log Z(x)`` (Rafailov et al. 2023, eq. 5), which cancels in every
    comparison. What TRL logs as rewards/chosen and rewards/rejected. Not detached: callers that log
    it detach. Raises ValueError for beta <= 0 or mismatched shapes. bf16 / fp16 inputs: float32 out.
    """
    beta = _checks.positive("implicit_reward", "beta", beta)
    _checks.same_shape("implicit_reward", policy_logps=policy_logps, ref_logps=ref_logps)
    policy_logps, ref_logps = _checks.at_least_float32(policy_logps), _checks.at_least_float32(ref_logps)
    return beta * (policy_logps - ref_logps)


def bradley_terry(r_chosen, r_rejected):
    """Bradley-Terry probability that `chosen` is preferred: ``sigmoid(r_chosen - r_rejected)``.

    Intuition: only reward differences matter; equal rewards give a coin flip, and
    P(a over b) + P(b over a) = 1.

    Args:
        r_chosen, r_rejected: (B,) rewards; they broadcast together with the same number of dims (an
            outer comparison states both: (X, K, 1) against (X, 1, K)), or one is 0-d. A scalar head's
            (B, 1) against (B,) raises ValueError instead of giving (B, B).

    Returns:
        (B,) probabilities (float32 for bf16 / fp16 rewards).
    """
    _checks.same_ndim_broadcastable("bradley_terry", r_chosen=r_chosen, r_rejected=r_rejected)
    r_chosen, r_rejected = _checks.at_least_float32(r_chosen), _checks.at_least_float32(r_rejected)
    return torch.sigmoid(r_chosen - r_rejected)


def reward_model_loss(r_chosen, r_rejected, margin=0.0):
    """Per-pair negative log-likelihood of Bradley-Terry: ``-logsigmoid(r_chosen - r_rejected - margin)``.

    Introduced in ``08_rlhf``. Intuition: push the chosen answer's reward above the rejected one's;
    the optional margin (Llama 2's reward model; TRL's RewardTrainer ``margin`` column) asks for a
    larger gap on pairs the labeller was sure about. ``logsigmoid`` keeps huge gaps finite.

    Args:
        r_chosen, r_rejected: (B,) rewards from the reward model, the same number of dims (or one 0-d):
            a scalar head's (B, 1) against (B,) raises ValueError instead of broadcasting to (B, B);
            squeeze it first, as TRL's RewardTrainer does (huggingface/trl@v1.16.0,
            trl/trainer/reward_trainer.py, ``compute_loss``).
        margin: float, or a tensor of the rewards' shape (or with 1s in it).

    Returns:
        (B,) losses; take ``.mean()``. float32 for bf16 / fp16 rewards.
    """
    fn = "reward_model_loss"
    shape = _checks.same_ndim_broadcastable(fn, r_chosen=r_chosen, r_rejected=r_rejected)
    if isinstance(margin, torch.Tensor):
        _checks.broadcasts_to(fn, "margin", margin, "the rewards", torch.empty(shape))
        margin = _checks.at_least_float32(margin)
    r_chosen, r_rejected = _checks.at_least_float32(r_chosen), _checks.at_least_float32(r_rejected)
    return -F.logsigmoid(r_chosen - r_rejected - margin)


DPO_LOSS_TYPES = ("sigmoid", "hinge", "ipo", "robust")


def _weighted(term, weight):
    """``weight * term``, or exact zeros when the weight is 0 (``0 * inf`` would be NaN)."""
    return weight * term if weight != 0 else torch.zeros_like(term)


def dpo_loss(
    policy_chosen,
    policy_rejected,
    ref_chosen,
    ref_rejected,
    beta=0.1,
    loss_type="sigmoid",
    label_smoothing=0.0,
):
    """The DPO family of per-pair losses, as in TRL's DPOTrainer (``dpo_loss`` in 0.x, ``_compute_loss`` in 1.16).

    Introduced in ``06_dpo``. With ``logits = (pc - pr) - (rc - rr)``, how much more the policy than
    the reference prefers the chosen answer (beta * logits is the implicit reward gap):

        sigmoid: -logsigmoid(beta*logits)*(1-ls) - logsigmoid(-beta*logits)*ls
                 DPO (Rafailov et al. 2023); with ls > 0, conservative DPO (cDPO): labels flipped
                 with probability ls
        hinge:   relu(1 - beta*logits)                 (SLiC, Zhao et al. 2023)
        ipo:     (logits - 1/(2*beta))**2              (IPO, Azar et al. 2023, eq. 17): a target gap
                 instead of pushing the gap to infinity
        robust:  (-logsigmoid(beta*logits)*(1-ls) + logsigmoid(-beta*logits)*ls) / (1 - 2*ls)
                 (rDPO, Chowdhury et al. 2024): unbiased under label noise rate ls < 0.5

    `label_smoothing` (ls) is used by sigmoid and robust only; hinge and ipo ignore it. cDPO (sigmoid with
    ls > 0) was TRL 0.x's; TRL 1.16, pinned in constraints.txt, has no cDPO: its sigmoid loss ignores
    ``DPOConfig.label_smoothing``, which only robust, exo_pair and the aot losses read (tests/test_hf_bridge.py
    pins this). Nor has it ``rpo_alpha``: RPO's NLL term is ``loss_type=["sigmoid", "sft"]`` with
    ``loss_weights=[1.0, alpha]`` (docs/scaling.md). Note: TRL's DPOTrainer feeds IPO the length-AVERAGED
    log-ratios (each answer's summed log-ratio divided by its number of tokens); pass averaged log-probs here to
    reproduce its IPO, summed ones for the paper's.

    Numerical safety: a term whose weight is 0 (``ls`` or ``1 - ls``) is left out, not multiplied by 0:
    a pair with infinite logits (an answer of probability 0 under a model, log-prob -inf) then gets its
    true loss (0 or +inf) instead of ``0 * inf = NaN``.

    Args:
        policy_chosen, policy_rejected: (B,) sequence log-probs under the policy (with gradient).
        ref_chosen, ref_rejected: (B,) sequence log-probs under the frozen reference model.
        beta: > 0; the KL strength: small beta lets the policy move far from the reference.
        loss_type: "sigmoid", "hinge", "ipo" or "robust".
        label_smoothing: in [0, 0.5) for robust, [0, 1] otherwise.

    Returns:
        (losses, chosen_rewards, rejected_rewards), each (B,); the rewards are the detached implicit
        rewards ``beta * (policy - ref)`` used for logging (reward accuracy, margins).
    """
    fn = "dpo_loss"
    _checks.same_shape(
        fn,
        policy_chosen=policy_chosen,
        policy_rejected=policy_rejected,
        ref_chosen=ref_chosen,
        ref_rejected=ref_rejected,
    )
    beta = _checks.positive(fn, "beta", beta)
    _checks.one_of(fn, "loss_type", loss_type, DPO_LOSS_TYPES)
    ls = float(label_smoothing)
    policy_chosen, policy_rejected, ref_chosen, ref_rejected = (  # bf16 sums: logits in float32 (TRL PR #942)
        _checks.at_least_float32(x) for x in (policy_chosen, policy_rejected, ref_chosen, ref_rejected))
    if loss_type == "robust" and not 0.0 <= ls < 0.5:
        raise ValueError(f"{fn}: label_smoothing must be in [0, 0.5) for loss_type 'robust', got {ls}")
    if not 0.0 <= ls <= 1.0:
        raise ValueError(f"{fn}: label_smoothing must be in [0, 1], got {ls}")

    # Checked numerically against huggingface/trl@v1.16.0, trl/trainer/dpo_trainer.py (DPOTrainer._compute_loss)
    # by tests/test_hf_bridge.py (the method was DPOTrainer.dpo_loss in TRL 0.x): same logits, the
    # same four formulas, rewards beta * (policy - ref).detach(); IPO's length averaging happens upstream there.
    logits = (policy_chosen - policy_rejected) - (ref_chosen - ref_rejected)  # (B,)
    if loss_type in ("sigmoid", "robust"):
        nll_as_labelled, nll_flipped = -F.logsigmoid(beta * logits), -F.logsigmoid(-beta * logits)  # (B,) each
    if loss_type == "sigmoid":
        losses = _weighted(nll_as_labelled, 1 - ls) + _weighted(nll_flipped, ls)
    elif loss_type == "hinge":
        losses = torch.relu(1 - beta * logits)
    elif loss_type == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    else:  # robust
        losses = (_weighted(nll_as_labelled, 1 - ls) - _weighted(nll_flipped, ls)) / (1 - 2 * ls)
    chosen_rewards = implicit_reward(policy_chosen, ref_chosen, beta).detach()
    rejected_rewards = implicit_reward(policy_rejected, ref_rejected, beta).detach()
    return losses, chosen_rewards, rejected_rewards


def kto_loss(policy_logps, ref_logps, desirable, kl, beta=0.1, desirable_weight=1.0, undesirable_weight=1.0):
    """Per-example KTO loss (Ethayarajh et al. 2024, eq. 7), as in TRL's ``KTOTrainer.kto_loss``.

    Introduced in ``06_dpo``. Intuition: no pairs, just a thumbs up or down per answer. The implicit
    reward ``logratio = policy - ref`` is compared with a reference point z, an estimate of
    KL(policy || ref) (TRL: the mean log-ratio on mismatched prompt/answer pairs), treated as a
    constant; the sigmoid saturates, like prospect theory's value function:

        z = clamp(kl, min=0).detach()
        desirable:   w_d * (1 - sigmoid(beta * (logratio - z)))
        undesirable: w_u * (1 - sigmoid(beta * (z - logratio)))

    (``1 - sigmoid(x)`` is computed as ``sigmoid(-x)``, the same number without cancellation.)

    Args:
        policy_logps, ref_logps: (B,) sequence log-probs of each answer.
        desirable: (B,) bool or 0/1; True for a thumbs up.
        kl: float or tensor broadcasting to (B,) (usually a scalar); the KL estimate.
        beta: > 0.
        desirable_weight, undesirable_weight: >= 0; w_d and w_u, to balance unequal counts.

    Returns:
        (B,) losses.
    """
    fn = "kto_loss"
    _checks.same_shape(fn, policy_logps=policy_logps, ref_logps=ref_logps, desirable=torch.as_tensor(desirable))
    beta = _checks.positive(fn, "beta", beta)
    w_d = _checks.non_negative(fn, "desirable_weight", desirable_weight)
    w_u = _checks.non_negative(fn, "undesirable_weight", undesirable_weight)
    policy_logps, ref_logps = _checks.at_least_float32(policy_logps), _checks.at_least_float32(ref_logps)
    desirable = _checks.as_float(fn, "desirable", desirable, policy_logps).bool()
    kl = torch.as_tensor(kl, dtype=policy_logps.dtype, device=policy_logps.device)
    _checks.broadcasts_to(fn, "kl", kl, "policy_logps", policy_logps)

    # Checked by reading huggingface/trl@v1.16.0, trl/trainer/kto_trainer.py (KTOTrainer._compute_loss; it was
    # KTOTrainer.kto_loss in TRL 0.x), not by a test: kl detached and
    # clamped at 0, the two sigmoids below, the weights applied per example.
    z = kl.clamp(min=0).detach()
    logratio = policy_logps - ref_logps  # (B,)
    desirable_losses = w_d * torch.sigmoid(-beta * (logratio - z))  # = w_d * (1 - sigmoid(beta*(logratio - z)))
    undesirable_losses = w_u * torch.sigmoid(-beta * (z - logratio))  # = w_u * (1 - sigmoid(beta*(z - logratio)))
    return torch.where(desirable, desirable_losses, undesirable_losses)
