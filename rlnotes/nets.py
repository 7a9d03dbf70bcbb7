"""Small networks for the course's algorithms, and the one place where their weights are initialised.

Initialisation (as CleanRL's `layer_init`, following "The 37 implementation details of PPO"):
orthogonal weight matrices scaled by a gain, biases 0. The gain of a layer depends on what it does:

    hidden layers                          gain sqrt(2)   keeps activations' scale through ReLU/Tanh layers
    value outputs (Q-values, V)            gain 1.0       outputs start on the scale of the features
    policy outputs (logits, Gaussian mean) gain 0.01      a near-uniform (or centred) first policy

Every builder here calls `init_layer`, so changing the scheme is a one-line edit. The chapters add
their heads to this module: a Q-network (notebook 01) now; actors and critics later.
"""

from __future__ import annotations

import math

import gymnasium as gym
import torch
from torch import nn

__all__ = ["HIDDEN_GAIN", "VALUE_GAIN", "POLICY_GAIN", "init_layer", "mlp", "flat_size", "QNetwork"]

HIDDEN_GAIN = math.sqrt(2)
VALUE_GAIN = 1.0
POLICY_GAIN = 0.01


def init_layer(layer: nn.Linear, gain: float, bias: float = 0.0) -> nn.Linear:
    """Orthogonal weights scaled by `gain`, constant bias; returns the layer (to use inline)."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, bias)
    return layer


def mlp(in_features: int, out_features: int, hidden=(64, 64), activation=nn.Tanh, output_gain: float = VALUE_GAIN) -> nn.Sequential:
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
