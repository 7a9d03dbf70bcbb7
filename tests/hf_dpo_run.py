"""One TRL DPO run on the course's preference pairs: the script that tests/test_hf_bridge.py launches.

Run it on one process, or data-parallel on several with Accelerate (gloo on the CPU, loopback only):

    python tests/hf_dpo_run.py --model DIR --data pairs.jsonl --out OUT --per-device-batch 16 --steps 6
    accelerate launch --num_processes 2 --cpu --num_machines 1 --mixed_precision no --dynamo_backend no \
        --main_process_ip 127.0.0.1 --main_process_port PORT \
        tests/hf_dpo_run.py --model DIR --data pairs.jsonl --out OUT --per-device-batch 8 --steps 6

DIR is a GPT2LMHeadModel saved with ``save_pretrained`` (``rlnotes.lm.hf.to_hf(sft_model)``): it is the
policy's start and the reference model. pairs.jsonl is what ``rlnotes.lm.export.write_jsonl`` wrote
(TRL's {"prompt", "chosen", "rejected"} format). The global batch is per-device-batch x processes, so
the two commands above train on the same 16 pairs a step. The main process writes OUT/history.json
(the loss TRL logged at every step, averaged over processes) and OUT/model.pt (the final weights).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local: fail fast instead of reaching for a hub

import torch


def run(model_dir, data, out, per_device_batch, steps, learning_rate=6e-4, beta=0.1, seed=0, loss_type="sigmoid"):
    """Train with DPOTrainer; returns the list of per-step losses (on every process)."""
    from datasets import load_dataset
    from transformers import GPT2LMHeadModel
    from trl import DPOConfig, DPOTrainer

    from rlnotes.lm import hf
    from rlnotes.lm.task import AdditionTask

    torch.set_num_threads(1)
    out = Path(out)
    task = AdditionTask()
    dataset = load_dataset("json", data_files=str(data), cache_dir=str(out / "datasets_cache"))["train"]
    args = DPOConfig(
        output_dir=str(out / "trainer"),
        per_device_train_batch_size=per_device_batch,
        gradient_accumulation_steps=1,
        max_steps=steps,
        learning_rate=learning_rate,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        beta=beta,
        loss_type=[loss_type],
        max_length=None,  # answers are at most 10 tokens; nothing to truncate
        bf16=False,  # TRL's default is bf16 when fp16 is off: keep float32 on the CPU
        activation_checkpointing=False,  # TRL turns (gradient) checkpointing on by default
        use_cpu=True,
        seed=seed,
        data_seed=seed,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # every parameter gets a gradient
    )
    policy = GPT2LMHeadModel.from_pretrained(model_dir)  # a local directory: nothing is downloaded
    reference = GPT2LMHeadModel.from_pretrained(model_dir)
    trainer = DPOTrainer(
        model=policy, ref_model=reference, args=args, train_dataset=dataset,
        processing_class=hf.hf_tokenizer(task.tokenizer),
    )
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h and "train_runtime" not in h]
    if trainer.accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        history = {
            "loss": losses,
            "num_processes": trainer.accelerator.num_processes,
            "distributed_type": str(trainer.accelerator.distributed_type),
            "backend": trainer.accelerator.state.backend,
            "per_device_batch": per_device_batch,
            "steps": steps,
        }
        (out / "history.json").write_text(json.dumps(history))
        state = trainer.accelerator.unwrap_model(trainer.model).state_dict()
        torch.save({k: v.detach().cpu() for k, v in state.items()}, out / "model.pt")
    trainer.accelerator.wait_for_everyone()
    return losses


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="directory of a saved GPT2LMHeadModel (policy start and reference)")
    p.add_argument("--data", required=True, help="JSONL of {prompt, chosen, rejected} (rlnotes.lm.export)")
    p.add_argument("--out", required=True, help="output directory: history.json, model.pt")
    p.add_argument("--per-device-batch", type=int, required=True)
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--learning-rate", type=float, default=6e-4)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    run(a.model, a.data, a.out, a.per_device_batch, a.steps, a.learning_rate, a.beta, a.seed)


if __name__ == "__main__":
    main()
