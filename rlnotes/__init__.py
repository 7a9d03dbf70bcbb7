"""rlnotes: the tested functions behind an executable course on deep reinforcement learning.

Concept modules (pure tensor functions, one place for each formula):
    advantages   returns, TD targets, GAE, normalization, group-relative advantages
    objectives   policy-gradient loss, clipped surrogate, value loss, loss aggregation
    divergences  exact KL, sample estimators k1/k2/k3, the adaptive KL coefficient
    preference   Bradley-Terry, reward-model loss, the DPO family, KTO

Around them: `envs` (a gridworld with known dynamics, gymnasium factories), `nets` (policies, critics,
Q-networks), `algos` (tabular methods, DQN, REINFORCE, actor-critic, A2C, TRPO, PPO: training loops
that return a history), `lm` (a tiny GPT lab: tokenizer, model, verifiable task, SFT, DPO family),
`widgets` (a tested function + sliders each), `plots`, `bench` (side by side with Stable-Baselines3)
and the `rlnotes` command line (`cli`).
"""

__version__ = "0.1.0"
