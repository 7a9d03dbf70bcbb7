"""Exact labs: small problems whose true answer is known, to check the course's estimates against.

Each module belongs to one chapter and holds what its notebook measures, not an algorithm: the
algorithms live in `rlnotes.algos` and hold only themselves.

    policy_gradient   chapter 02: exact policy gradients (softmax bandit, Gaussian, tabular) and sampled episodes
    trust_region      chapter 04: the true surrogate and KL along TRPO's direction, against its models
    surrogate         chapter 04: the objective J against the surrogate L on a tabular MDP, exactly (the
                      performance difference lemma, first-order agreement, TRPO's Theorem 1 bound)
"""
