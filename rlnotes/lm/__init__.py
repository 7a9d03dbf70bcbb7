"""A tiny language-model lab for the alignment chapters (06 DPO, 07 GRPO, 08 RLHF).

    tokenizer  characters plus <pad> and <eos>
    model      a minGPT-style tiny GPT (~100k parameters)
    task       2-digit addition with a verifiable reward, train/held-out splits, a noisy teacher
    logprobs   masked per-token log-probs (prompt and padding masked, EOS counted), sequence sums/means
    sampling   batched sampling with temperature and EOS; greedy and sampled accuracy
    sft        supervised fine-tuning on the noisy teacher: sft.train(config) -> (model, history)
    dpo        preference data from the SFT model, the DPO family (+ an NLL term) and KTO
    bandit     the exact check of DPO's derivation on a categorical "bandit LM"
    export     JSONL for TRL and LLaMA-Factory
"""
