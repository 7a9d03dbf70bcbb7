"""Chapter 04's measurement: the true surrogate and KL along TRPO's direction, against its two models.

Introduced in notebook 04. TRPO predicts with models at theta_old (a linear surrogate, a quadratic
KL: `rlnotes.algos.trpo`); this lab measures the truth at theta_old + alpha * s for many alpha, so the
notebook can draw where the models hold and where they drift, and why the line search must measure.
The algorithm itself does not need it: `trpo.py` holds only TRPO.

(The three-action toy of the KL-constraint widget is in `rlnotes.widgets.kl_constraint`, which draws it.)
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from rlnotes.algos.common import freeze_distribution, surrogate_and_kl

__all__ = ["along_direction"]


def along_direction(policy: nn.Module, obs, actions, advantages, theta_old: torch.Tensor, direction: torch.Tensor,
                    alphas) -> dict:
    """True surrogate improvement and true mean KL(pi_old || pi) at theta_old + alpha * direction, each alpha.

    For the notebook's picture of step 3: the linear and quadratic models are exact at alpha = 0 and
    drift away from the truth as alpha grows. The policy's parameters are restored on return.
    Returns {"alphas": (K,), "improvement": (K,), "kl": (K,)} as float64 tensors.
    """
    params = [p for p in policy.parameters() if p.requires_grad]
    saved = parameters_to_vector(params).detach().clone()
    vector_to_parameters(theta_old, params)
    with torch.no_grad():
        old_dist = freeze_distribution(policy(obs))
        old_logp = old_dist.log_prob(actions)
    base, _ = surrogate_and_kl(policy, obs, actions, old_logp, advantages, old_dist)
    improvement, kls = [], []
    for alpha in alphas:
        vector_to_parameters(theta_old + float(alpha) * direction, params)
        surrogate, kl = surrogate_and_kl(policy, obs, actions, old_logp, advantages, old_dist)
        improvement.append(float(surrogate - base))
        kls.append(float(kl))
    vector_to_parameters(saved, params)  # `saved` is a private copy: the parameters may view it
    as64 = lambda xs: torch.tensor(xs, dtype=torch.float64)  # noqa: E731
    return {"alphas": as64([float(a) for a in alphas]), "improvement": as64(improvement), "kl": as64(kls)}
