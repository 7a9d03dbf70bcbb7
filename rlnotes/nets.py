"""Small networks for the course's algorithms, and the one place where their weights are initialised.

Initialisation (as CleanRL's `layer_init`, following "The 37 implementation details of PPO"):
orthogonal weight matrices scaled by a gain, biases 0. The gain of a layer depends on what it does:

    hidden layers                          gain sqrt(2)   keeps activations' scale through ReLU/Tanh layers
    value outputs (Q-values, V)            gain 1.0       outputs start on the scale of the features
    policy outputs (logits, Gaussian mean) gain 0.01      a near-uniform (or centred) first policy

Every builder here calls `init_layer`, so changing the scheme is a one-line edit. The chapters add
their heads to this module: a Q-network (notebook 01), policies and a value network (02 on).
"""

from __future__ import annotations

import math

import gymnasium as gym
import torch
from torch import nn

__all__ = [
    "HIDDEN_GAIN", "VALUE_GAIN", "POLICY_GAIN", "init_layer", "mlp", "flat_size", "sample_categorical", "QNetwork",
    "CategoricalPolicy", "GaussianPolicy", "ValueNetwork", "make_policy", "QCritic",
]

HIDDEN_GAIN = math.sqrt(2)
VALUE_GAIN = 1.0
POLICY_GAIN = 0.01


def init_layer(layer: nn.Linear, gain: float, bias: float = 0.0) -> nn.Linear:
    """Orthogonal weights scaled by `gain`, constant bias; returns the layer (to use inline)."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, bias)
    return layer


def mlp(in_features: int, out_features: int, hidden=(64, 64), activation=nn.Tanh,
        output_gain: float = VALUE_GAIN) -> nn.Sequential:
    """A multilayer perceptron: (B, in_features) -> (B, out_features).

    hidden:      sizes of the hidden layers, e.g. (256, 256); () gives a linear map
    activation:  the class of the nonlinearity after each hidden layer (nn.Tanh, nn.ReLU, ...)
    output_gain: VALUE_GAIN for values, POLICY_GAIN for policy outputs (see the module docstring)
    """
    if in_features < 1 or out_features < 1 or any(h < 1 for h in hidden):
        raise ValueError(f"mlp: sizes must be >= 1, got in={in_features}, hidden={tuple(hidden)}, out={out_features}")
    layers, width = [], in_features
    for size in hidden:
        layers += [init_layer(nn.Linear(width, size), HIDDEN_GAIN), activation()]
        width = size
    layers.append(init_layer(nn.Linear(width, out_features), output_gain))
    return nn.Sequential(*layers)


def flat_size(space: gym.spaces.Space) -> int:
    """The number of inputs an MLP needs for observations from `space` (a Box, flattened)."""
    if not isinstance(space, gym.spaces.Box):
        raise ValueError(f"flat_size: MLPs here take Box observations, got {space}")
    return int(math.prod(space.shape))


def sample_categorical(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw from each categorical distribution given by `logits` (..., K) -> indices (...,), long.

    The course's one categorical sampler (policies, tabular episodes, sampled returns all call it).
    Gumbel-max trick: argmax_k (logits_k + G_k) with G_k = -log(E_k), E_k ~ Exp(1), is distributed as
    softmax(logits). For probabilities, pass ``probs.log()``: a probability of 0 gives a logit of -inf,
    which is never drawn. Why this one: on the course's hot path, one action for each of N envs at
    every env step (N x A = 8 x 2), it is the cheapest of the four samplers the course used to have
    (Gumbel-max, inverse CDF, torch.multinomial, numpy's searchsorted); see benchmarks/bench_validation.py.
    generator: a torch.Generator for a reproducible stream, or None for torch's global one.
    """
    noise = torch.empty_like(logits).exponential_(generator=generator)  # E ~ Exp(1); -log(E) ~ Gumbel(0, 1)
    return (logits - noise.log()).argmax(-1)  # (..., K) -> (...,)


class QNetwork(nn.Module):
    """Q(s, .) for every discrete action at once: obs (B, obs_size) -> Q-values (B, A). Notebook 01.

    One forward pass values all actions, so max_a Q(s, a) and argmax_a Q(s, a) cost one call: the
    reason DQN outputs A numbers instead of taking the action as an input.
    """

    def __init__(self, obs_size: int, n_actions: int, hidden=(256, 256), activation=nn.ReLU):
        super().__init__()
        self.net = mlp(obs_size, n_actions, hidden, activation, output_gain=VALUE_GAIN)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)  # (B, obs_size) -> (B, A)

    @torch.no_grad()
    def greedy(self, obs: torch.Tensor) -> torch.Tensor:
        """argmax_a Q(s, a): (B, obs_size) -> actions (B,)."""
        return self(obs).argmax(-1)


# The policies below build their distributions with validate_args=False: argument checks cost more
# than the tiny network's forward pass, on every env step of a rollout.


class CategoricalPolicy(nn.Module):
    """pi(a|s) over n discrete actions: obs (B, obs_size) -> torch.distributions.Categorical, batch (B,)."""

    def __init__(self, obs_size: int, n_actions: int, hidden=(64, 64), activation=nn.Tanh):
        super().__init__()
        self.logits = mlp(obs_size, n_actions, hidden, activation, output_gain=POLICY_GAIN)

    def forward(self, obs: torch.Tensor) -> torch.distributions.Categorical:
        return torch.distributions.Categorical(logits=self.logits(obs), validate_args=False)  # logits (B, A)

    @torch.no_grad()
    def sample(self, obs: torch.Tensor) -> torch.Tensor:
        """Actions drawn from pi(.|s): (B, obs_size) -> (B,). The same distribution as
        `self(obs).sample()`, by the Gumbel-max trick (argmax of logits + Gumbel noise), without
        building a distribution object: the cheapest way to act, step after step, in a rollout."""
        return sample_categorical(self.logits(obs))  # (B, A) -> (B,)

    @torch.no_grad()
    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        """The most likely action, for evaluation: (B, obs_size) -> (B,)."""
        return self.logits(obs).argmax(-1)


class GaussianPolicy(nn.Module):
    """pi(a|s) = N(mean(s), diag(std^2)) over a D-dimensional Box: obs (B, obs_size) -> a distribution
    whose `log_prob(actions (B, D))` and `entropy()` are (B,) (summed over the D independent dimensions).

    The log standard deviation is a learned parameter that does not depend on the state, as in
    Spinning Up, CleanRL and Stable-Baselines3; it starts at `log_std_init`.
    """

    def __init__(self, obs_size: int, action_size: int, hidden=(64, 64), activation=nn.Tanh, log_std_init: float = 0.0):
        super().__init__()
        self.mean = mlp(obs_size, action_size, hidden, activation, output_gain=POLICY_GAIN)
        self.log_std = nn.Parameter(torch.full((action_size,), float(log_std_init)))

    def forward(self, obs: torch.Tensor) -> torch.distributions.Independent:
        mean = self.mean(obs)  # (B, D)
        normal = torch.distributions.Normal(mean, self.log_std.exp().expand_as(mean), validate_args=False)
        return torch.distributions.Independent(normal, 1, validate_args=False)  # log_prob sums over D: (B, D) -> (B,)

    @torch.no_grad()
    def sample(self, obs: torch.Tensor) -> torch.Tensor:
        """Actions drawn from pi(.|s): (B, obs_size) -> (B, D), as `self(obs).sample()` but cheaper."""
        mean = self.mean(obs)  # (B, D)
        return mean + self.log_std.exp() * torch.randn_like(mean)

    @torch.no_grad()
    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        """The mean action, for evaluation: (B, obs_size) -> (B, D)."""
        return self.mean(obs)


class ValueNetwork(nn.Module):
    """V(s): obs (B, obs_size) -> values (B,), squeezed, so that `values - returns` never
    broadcasts (B, 1) against (B,) into a (B, B) matrix: a classic silent bug."""

    def __init__(self, obs_size: int, hidden=(64, 64), activation=nn.Tanh):
        super().__init__()
        self.net = mlp(obs_size, 1, hidden, activation, output_gain=VALUE_GAIN)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).squeeze(-1)  # (B, 1) -> (B,)


def make_policy(observation_space: gym.spaces.Space, action_space: gym.spaces.Space, hidden=(64, 64),
                activation=nn.Tanh, log_std_init: float = 0.0) -> nn.Module:
    """A CategoricalPolicy for Discrete actions, a GaussianPolicy for Box actions."""
    obs_size = flat_size(observation_space)
    if isinstance(action_space, gym.spaces.Discrete):
        return CategoricalPolicy(obs_size, int(action_space.n), hidden, activation)
    if isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
        return GaussianPolicy(obs_size, action_space.shape[0], hidden, activation, log_std_init)
    raise ValueError(f"make_policy: actions must be Discrete or a 1-d Box, got {action_space}")


class QCritic(nn.Module):
    """Q(s, a) of one given action: (obs (B, obs_size), actions (B,) or (B, D)) -> values (B,). Notebook 03.

    The five-step actor-critic scores the action it took, so the action is an input, as in the notes'
    q(s, a; w): a discrete action enters one-hot (A numbers), a Box action as it is (D numbers). One
    class thus serves CartPole and continuous tasks alike. (QNetwork, notebook 01, instead outputs
    every action's value at once, which DQN's max needs.)
    """

    def __init__(self, obs_size: int, action_size: int, discrete: bool, hidden=(64, 64), activation=nn.Tanh):
        super().__init__()
        self.action_size, self.discrete = action_size, discrete
        self.net = mlp(obs_size + action_size, 1, hidden, activation, output_gain=VALUE_GAIN)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        if self.discrete:
            actions = nn.functional.one_hot(actions.long(), self.action_size).to(obs.dtype)  # (B,) -> (B, A)
        return self.net(torch.cat([obs, actions], -1)).squeeze(-1)  # (B, obs + A) -> (B, 1) -> (B,)

    @classmethod
    def for_spaces(cls, observation_space: gym.spaces.Space, action_space: gym.spaces.Space, hidden=(64, 64),
                   activation=nn.Tanh) -> "QCritic":
        """A QCritic sized for a Box observation space and a Discrete or 1-d Box action space."""
        if isinstance(action_space, gym.spaces.Discrete):
            return cls(flat_size(observation_space), int(action_space.n), True, hidden, activation)
        if isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
            return cls(flat_size(observation_space), action_space.shape[0], False, hidden, activation)
        raise ValueError(f"QCritic: actions must be Discrete or a 1-d Box, got {action_space}")
