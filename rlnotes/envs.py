"""Environments: a gridworld whose dynamics are known exactly, and gymnasium factories.

The gridworld is the course's laboratory for chapters 00 and 01: because its transition
probabilities P(s'|s, a) and rewards r(s, a, s') are tensors we can read, V, Q and Q* can be
computed exactly (`rlnotes.algos.tabular`) and every sampled or learned estimate compared with them.

Layouts are lists of strings, one character a cell:
    .  an ordinary cell          S  the start cell (ordinary otherwise)
    #  a wall (not a state)      G  goal: entering it pays +1 and ends the episode
                                 P  pit: entering it pays -1 and ends the episode
The default layout, `AIMA_4X3`, is the 4x3 world of Russell & Norvig (AIMA, ch. 17), so its optimal
values can be checked against the numbers published there.
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

__all__ = [
    "ACTIONS",
    "AIMA_4X3",
    "TabularMDP",
    "gridworld",
    "GridWorldEnv",
    "make_env",
    "make_vec",
    "final_next_obs",
    "ReachEnv",
]

# Action a moves the agent by ACTIONS[a] = (d_row, d_col).
ACTIONS = {0: (-1, 0), 1: (0, 1), 2: (1, 0), 3: (0, -1)}
ACTION_NAMES = ("up", "right", "down", "left")
ACTION_ARROWS = ("\u2191", "\u2192", "\u2193", "\u2190")

AIMA_4X3 = (
    "...G",
    ".#.P",
    "S...",
)
TERMINAL_REWARD = {"G": 1.0, "P": -1.0}


@dataclass(frozen=True)
class TabularMDP:
    """A finite MDP given by tensors (float64).

    P:        (S, A, S)  transition probabilities P[s, a, s'] (each P[s, a] sums to 1)
    R:        (S, A, S)  reward r(s, a, s') received on that transition
    terminal: (S,)       bool; terminal states absorb with reward 0, so their value is 0
    start:    int        the start state
    cells:    list of (row, col) for each state, for drawing (empty for MDPs that are not grids)
    shape:    (rows, cols) of the grid, for drawing
    """

    P: torch.Tensor
    R: torch.Tensor
    terminal: torch.Tensor
    start: int = 0
    cells: tuple = ()
    shape: tuple = ()

    def __post_init__(self):
        S, A, S2 = self.P.shape
        if S != S2 or self.R.shape != self.P.shape or self.terminal.shape != (S,):
            raise ValueError(
                f"TabularMDP: P {tuple(self.P.shape)}, R {tuple(self.R.shape)} and terminal "
                f"{tuple(self.terminal.shape)} must be (S, A, S), (S, A, S) and (S,)"
            )
        if not torch.allclose(self.P.sum(-1), torch.ones(S, A, dtype=self.P.dtype)):
            raise ValueError("TabularMDP: every row P[s, a] must sum to 1")

    @property
    def n_states(self) -> int:
        return self.P.shape[0]

    @property
    def n_actions(self) -> int:
        return self.P.shape[1]

    @property
    def expected_reward(self) -> torch.Tensor:
        """r(s, a) = sum_s' P(s'|s, a) r(s, a, s'), shape (S, A).

        Numerical safety: a transition of probability 0 adds exactly 0, whatever its reward (even inf
        or NaN): ``torch.where``, not ``0 * r``.
        """
        return torch.where(self.P > 0, self.P * self.R, 0.0).sum(-1)

    def state_of(self, row: int, col: int) -> int:
        """The state index of a grid cell."""
        return self.cells.index((row, col))


def gridworld(layout=AIMA_4X3, slip: float = 0.2, step_reward: float = -0.04) -> TabularMDP:
    """Build the MDP of a grid layout.

    slip:        probability that the move goes sideways instead: slip/2 to each side of the
                 intended direction (AIMA: 0.8 intended, 0.1 left, 0.1 right, i.e. slip=0.2).
                 slip=0 makes the transitions deterministic.
    step_reward: reward of every move out of a non-terminal state; entering G or P adds +1 or -1.
    A move into a wall or off the grid leaves the agent where it is.
    """
    if not 0.0 <= slip <= 1.0:
        raise ValueError(f"gridworld: slip must be in [0, 1], got {slip}")
    rows, cols = len(layout), len(layout[0])
    if any(len(line) != cols for line in layout):
        raise ValueError("gridworld: every row of the layout must have the same length")
    if any(ch not in ".#SGP" for line in layout for ch in line):
        raise ValueError("gridworld: layout cells must be one of . # S G P")
    cells = [(r, c) for r in range(rows) for c in range(cols) if layout[r][c] != "#"]
    index = {cell: i for i, cell in enumerate(cells)}
    S, A = len(cells), len(ACTIONS)
    P = torch.zeros(S, A, S, dtype=torch.float64)
    R = torch.zeros(S, A, S, dtype=torch.float64)
    terminal = torch.tensor([layout[r][c] in TERMINAL_REWARD for r, c in cells])

    def move(cell, action):
        dr, dc = ACTIONS[action]
        nxt = (cell[0] + dr, cell[1] + dc)
        return nxt if nxt in index else cell  # walls and edges: stay put

    for s, cell in enumerate(cells):
        if terminal[s]:
            P[s, :, s] = 1.0  # absorbing, reward 0
            continue
        for a in range(A):
            sideways = ((a + 1) % A, (a - 1) % A)
            for actual, prob in ((a, 1.0 - slip), (sideways[0], slip / 2), (sideways[1], slip / 2)):
                if prob == 0.0:
                    continue
                s_next = index[move(cell, actual)]
                P[s, a, s_next] += prob
                r_cell, c_cell = cells[s_next]
                R[s, a, s_next] = step_reward + TERMINAL_REWARD.get(layout[r_cell][c_cell], 0.0)
    starts = [index[(r, c)] for r, c in cells if layout[r][c] == "S"]
    return TabularMDP(P, R, terminal, start=starts[0] if starts else 0, cells=tuple(cells), shape=(rows, cols))


class GridWorldEnv(gym.Env):
    """A gymnasium environment that samples from a TabularMDP (observations are state indices).

    Episodes start in `mdp.start`, terminate on entering a terminal state, and are truncated after
    `max_steps` moves: the same terminated/truncated split as every gymnasium task.
    """

    metadata = {"render_modes": []}

    def __init__(self, mdp: TabularMDP | None = None, max_steps: int = 100):
        self.mdp = mdp if mdp is not None else gridworld()
        self.max_steps = max_steps
        self.observation_space = gym.spaces.Discrete(self.mdp.n_states)
        self.action_space = gym.spaces.Discrete(self.mdp.n_actions)
        self._P = self.mdp.P.numpy()
        self._R = self.mdp.R.numpy()
        self._terminal = self.mdp.terminal.numpy()

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state, self.steps = self.mdp.start, 0
        return self.state, {}

    def step(self, action):
        probs = self._P[self.state, action]
        next_state = int(self.np_random.choice(len(probs), p=probs))
        reward = float(self._R[self.state, action, next_state])
        self.state, self.steps = next_state, self.steps + 1
        terminated = bool(self._terminal[next_state])
        truncated = not terminated and self.steps >= self.max_steps
        return next_state, reward, terminated, truncated, {}


def make_env(env_id: str, seed: int | None = None, **kwargs) -> gym.Env:
    """One gymnasium env with episode statistics recorded, reset with `seed`."""
    env = gym.wrappers.RecordEpisodeStatistics(gym.make(env_id, **kwargs))
    env.reset(seed=seed)
    env.action_space.seed(seed)
    return env


def make_vec(env_id: str, num_envs: int, seed: int | None = None, **kwargs) -> gym.vector.VectorEnv:
    """`num_envs` copies of a gymnasium task in one synchronous vector env.

    Autoreset is SAME_STEP: when an episode ends, `step` already returns the next episode's first
    observation, and the true last observation is in `info["final_obs"]` (where `info["_final_obs"]`
    is set). So every transition a loop sees is real (gymnasium 1.x's default, NEXT_STEP, would hand
    over a fake reset transition one step later), and a truncated episode still has the final
    observation its bootstrap value needs. Episode returns and lengths are in `info["episode"]`.
    """
    if num_envs < 1:
        raise ValueError(f"make_vec: num_envs must be >= 1, got {num_envs}")
    envs = gym.make_vec(
        env_id,
        num_envs=num_envs,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
        **kwargs,
    )
    envs = gym.wrappers.vector.RecordEpisodeStatistics(envs)
    envs.reset(seed=seed)
    envs.action_space.seed(seed)
    return envs


def final_next_obs(next_obs: np.ndarray, info: dict) -> np.ndarray:
    """The true s_{t+1} of each env: `info["final_obs"]` where an episode just ended, else next_obs.

    With SAME_STEP autoreset, `next_obs` of an env whose episode ended is already the NEXT episode's
    first observation; bootstrapping a truncated episode from it would be wrong.
    """
    if "_final_obs" not in info:
        return next_obs
    real = next_obs.copy()
    for i in np.flatnonzero(info["_final_obs"]):
        real[i] = info["final_obs"][i]
    return real


class ReachEnv(gym.Env):
    """A small continuous-control task: steer a point in the plane to the origin (notebook 02).

    Observation: the position p in [-2, 2]^2; it starts uniformly in [-1, 1]^2. Action: a velocity
    a in [-1, 1]^2 (a Gaussian policy's sample is clipped to it by `algos.common.env_actions`); the
    point moves to p + 0.1 a. Reward: -|p'|, the distance left after the move, so every step spent away
    from the target costs. The episode terminates when |p'| < 0.1 (the target is reached) and is
    truncated after 50 steps (the time limit of the registered id "rlnotes/Reach-v0").

    Reference returns, means over 1000 episodes (notebook 02 computes them): uniformly random actions
    about -40; heading straight for the origin at unit speed (a = -p/|p|, 0.1 a step) about -3.0; at
    the box's full speed (a = clip(-10 p, -1, 1): up to 0.1 per axis, stopping on the target) about
    -2.4. A corner action moves sqrt(2) times faster than a unit one, hence the difference. Returns
    depend a lot on the start, so compare policies on the same episodes (10 are not enough to tell
    -2.4 from -1.8). The registered reward_threshold, -3.0, is the unit-speed straight line. Pendulum-v1,
    the classic small continuous task, needs a swing-up that plain REINFORCE does not find in a few
    minutes; this task is learnable in seconds, so the Gaussian policy's gradient can be seen at work.
    """

    metadata = {"render_modes": []}
    SPEED = 0.1
    RADIUS = 0.1

    def __init__(self):
        self.observation_space = gym.spaces.Box(-2.0, 2.0, (2,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), dtype=np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position = self.np_random.uniform(-1.0, 1.0, size=2).astype(np.float32)
        return self.position.copy(), {}

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        self.position = np.clip(self.position + self.SPEED * action, -2.0, 2.0).astype(np.float32)
        distance = float(np.linalg.norm(self.position))
        return self.position.copy(), -distance, distance < self.RADIUS, False, {}


if "rlnotes/Reach-v0" not in gym.registry:
    gym.register(id="rlnotes/Reach-v0", entry_point="rlnotes.envs:ReachEnv", max_episode_steps=50, reward_threshold=-3.0)
