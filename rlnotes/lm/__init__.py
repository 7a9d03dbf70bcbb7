"""A tiny language-model lab for the alignment chapters (06 DPO, 07 GRPO, 08 RLHF).

    tokenizer  characters plus <pad> and <eos>
    model      a minGPT-style tiny GPT (~100k parameters)
    task       2-digit addition with a verifiable reward, train/held-out splits, a noisy teacher
    logprobs   masked per-token log-probs (prompt and padding masked, EOS counted), sequence sums/means
    sampling   batched sampling with temperature and EOS; greedy and sampled accuracy
    rollout    sample answers from a frozen policy, score them, keep old and reference log-probs
    sft        supervised fine-tuning on the noisy teacher (stage 1 of RLHF)
    dpo        preference data from the SFT model, the DPO family (+ an NLL term) and KTO (chapter 06)
    grpo       group-relative policy optimization on the verifiable reward (chapter 07)
    annotator  a simulated labeler with a stated taste, bias and slips (chapter 08)
    reward_model  a Bradley-Terry reward model learned from the annotator's rankings (stage 2)
    rlhf       PPO against the reward model, KL-shaped per-token reward, GAE over tokens (stage 3)
    bandit     the exact check of DPO's derivation on a categorical "bandit LM"
    export     JSONL for TRL and LLaMA-Factory
    hf         the tiny GPT and tokenizer as transformers objects, for TRL (the `hf` extra)

Every trainer (sft, dpo, grpo, reward_model, rlhf) has a Config dataclass and
``train(config, progress=None, ...) -> history``; `rlnotes lm <name>` runs it.
"""
