"""The bridge to real models: the course's tiny GPT and tokenizer as ``transformers`` objects, for TRL.

Needs the optional extra ``hf`` (``pip install -c constraints.txt -e ".[hf]"``: transformers, trl,
datasets, accelerate). Everything is built from configs in code; nothing is downloaded.

    to_hf(model)           course GPT -> transformers GPT2LMHeadModel with the same weights (same logits)
    from_hf(hf_model)      and back: GPT2LMHeadModel -> course GPT
    gpt2_config(config)    the GPT2Config that has the course model's layout
    hf_tokenizer(tok)      course CharTokenizer -> PreTrainedTokenizerFast with the same ids
    prompt_dataset(...)    addition prompts as a datasets.Dataset with a "prompt" column (GRPOTrainer)
    preference_dataset(.)  {"prompt", "chosen", "rejected"} records (rlnotes.lm.export) as a datasets.Dataset
    addition_reward(task)  the task's verifiable reward as a TRL reward function

Why GPT-2's layout fits the tiny GPT exactly (rlnotes/lm/model.py): pre-LayerNorm blocks (eps 1e-5,
with biases), learned position embeddings, one fused q/k/v projection with bias, attention scaled by
1/sqrt(head size), a 4x MLP, a final LayerNorm, and a head WITHOUT bias. Three settings differ from
GPT-2's defaults and are set here: the activation is the exact (erf) GELU of ``F.gelu``, which is
transformers' ``"gelu"`` (GPT-2's default ``"gelu_new"`` is the tanh approximation: 7e-3 off on logits);
the head is NOT tied to the token embeddings (``tie_word_embeddings=False``); and the special ids are
the course's (``<pad>`` = 0, ``<eos>`` = 1, no BOS). GPT-2 stores its linear layers as ``Conv1D``
with the weight transposed, (in, out), so every matrix of a block is transposed on the way.
"""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from .model import GPT, GPTConfig
from .task import AdditionTask
from .tokenizer import CharTokenizer

__all__ = [
    "gpt2_config", "to_hf", "from_hf", "hf_tokenizer", "prompt_dataset", "preference_dataset",
    "addition_reward", "parse_prompt",
]

# Linear layers of a block, stored (out, in) in the course model and (in, out) in GPT-2's Conv1D.
_BLOCK_LINEARS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
_BLOCK_NORMS = ("ln_1", "ln_2")


def gpt2_config(config: GPTConfig, pad_id: int = 0, eos_id: int = 1) -> GPT2Config:
    """The ``GPT2Config`` with the course model's sizes and layout (see the module docstring)."""
    return GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.block_size,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_inner=4 * config.n_embd,
        activation_function="gelu",  # exact erf GELU, as F.gelu; NOT GPT-2's "gelu_new" (tanh)
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        layer_norm_epsilon=1e-5,  # nn.LayerNorm's default
        initializer_range=0.02,
        scale_attn_weights=True,  # 1 / sqrt(head size)
        scale_attn_by_inverse_layer_idx=False,
        reorder_and_upcast_attn=False,
        tie_word_embeddings=False,  # the course's lm_head is its own matrix
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
    )


def _check_gpt2_layout(config: GPT2Config) -> None:
    """Refuse a GPT-2 whose computation the course model cannot reproduce."""
    problems = []
    if config.activation_function != "gelu":
        problems.append(f"activation_function={config.activation_function!r} (the course model uses exact 'gelu')")
    if config.n_inner not in (None, 4 * config.n_embd):
        problems.append(f"n_inner={config.n_inner} (the course model's MLP is 4 * n_embd = {4 * config.n_embd})")
    if not config.scale_attn_weights or config.scale_attn_by_inverse_layer_idx:
        problems.append("attention scaling other than 1/sqrt(head size)")
    if abs(config.layer_norm_epsilon - 1e-5) > 1e-12:
        problems.append(f"layer_norm_epsilon={config.layer_norm_epsilon} (the course model's LayerNorm uses 1e-5)")
    if getattr(config, "add_cross_attention", False):
        problems.append("cross-attention")
    if problems:
        raise ValueError("from_hf: this GPT-2 does not have the course model's layout: " + "; ".join(problems))


@torch.no_grad()
def to_hf(model: GPT, pad_id: int = 0, eos_id: int = 1) -> GPT2LMHeadModel:
    """A ``GPT2LMHeadModel`` with `model`'s weights (copied): the same logits for the same ids.

    The result is in the course model's train/eval mode and dtype. Its generation config ends
    answers at `eos_id` and pads with `pad_id` (the course tokenizer's ids by default).
    """
    config = gpt2_config(model.config, pad_id, eos_id)
    hf = GPT2LMHeadModel(config)
    src = model.state_dict()
    dst = {
        "transformer.wte.weight": src["wte.weight"],
        "transformer.wpe.weight": src["wpe.weight"],
        "transformer.ln_f.weight": src["ln_f.weight"],
        "transformer.ln_f.bias": src["ln_f.bias"],
        "lm_head.weight": src["lm_head.weight"],
    }
    for i in range(model.config.n_layer):
        for name in _BLOCK_NORMS:
            for p in ("weight", "bias"):
                dst[f"transformer.h.{i}.{name}.{p}"] = src[f"blocks.{i}.{name}.{p}"]
        for name in _BLOCK_LINEARS:
            dst[f"transformer.h.{i}.{name}.weight"] = src[f"blocks.{i}.{name}.weight"].t()  # (out, in) -> (in, out)
            dst[f"transformer.h.{i}.{name}.bias"] = src[f"blocks.{i}.{name}.bias"]
    hf.load_state_dict({k: v.detach().clone().contiguous() for k, v in dst.items()}, strict=True)
    hf.generation_config.eos_token_id = eos_id
    hf.generation_config.pad_token_id = pad_id
    hf.generation_config.bos_token_id = None
    hf.to(next(model.parameters()).dtype)
    hf.train(model.training)
    return hf


@torch.no_grad()
def from_hf(hf_model: GPT2LMHeadModel) -> GPT:
    """The course ``GPT`` with the weights (copied) of a GPT-2 that has its layout (``to_hf``'s inverse).

    Raises ValueError for a GPT-2 the course model cannot reproduce (another activation, MLP width,
    attention scaling or LayerNorm eps). A GPT-2 with tied embeddings is accepted: the course model
    gets a copy of the token embeddings as its head (the two are then trained apart).
    """
    c = hf_model.config
    _check_gpt2_layout(c)
    dropout = float(max(c.resid_pdrop, c.embd_pdrop, c.attn_pdrop))
    if not c.resid_pdrop == c.embd_pdrop == c.attn_pdrop:
        raise ValueError("from_hf: the course model has one dropout rate, "
                         f"got resid/embd/attn {c.resid_pdrop}/{c.embd_pdrop}/{c.attn_pdrop}")
    model = GPT(GPTConfig(c.vocab_size, c.n_positions, c.n_layer, c.n_head, c.n_embd, dropout))
    src = hf_model.state_dict()
    dst = {
        "wte.weight": src["transformer.wte.weight"],
        "wpe.weight": src["transformer.wpe.weight"],
        "ln_f.weight": src["transformer.ln_f.weight"],
        "ln_f.bias": src["transformer.ln_f.bias"],
        "lm_head.weight": src.get("lm_head.weight", src["transformer.wte.weight"]),
    }
    for i in range(c.n_layer):
        for name in _BLOCK_NORMS:
            for p in ("weight", "bias"):
                dst[f"blocks.{i}.{name}.{p}"] = src[f"transformer.h.{i}.{name}.{p}"]
        for name in _BLOCK_LINEARS:
            dst[f"blocks.{i}.{name}.weight"] = src[f"transformer.h.{i}.{name}.weight"].t()  # (in, out) -> (out, in)
            dst[f"blocks.{i}.{name}.bias"] = src[f"transformer.h.{i}.{name}.bias"]
    model.load_state_dict({k: v.detach().clone().contiguous() for k, v in dst.items()}, strict=True)
    model.to(next(hf_model.parameters()).dtype)
    model.train(hf_model.training)
    return model


def hf_tokenizer(tok: CharTokenizer, model_max_length: int | None = None) -> PreTrainedTokenizerFast:
    """The course's character tokenizer as a ``transformers`` tokenizer with the same ids.

    A ``tokenizers`` WordLevel model over ``tok.itos`` (``<pad>`` = 0, ``<eos>`` = 1, then one id per
    character), a pre-tokenizer that splits every character, and the two specials registered as
    special tokens, so the text ``"65<eos>"`` (how TRL appends EOS to an answer) encodes to the ids
    ``tok.encode("65", eos=True)``. No BOS is added, as in the course. Decoding joins the characters
    without spaces. A character outside the vocabulary raises (the course tokenizer raises too).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {s: i for i, s in enumerate(tok.itos)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))  # "<unk>" is not in vocab: unknown -> error
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")  # one piece per character
    backend.decoder = decoders.Fuse()  # join pieces without spaces
    backend.add_special_tokens([tok.PAD, tok.EOS])  # matched before pre-tokenization, kept whole
    fast = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=tok.PAD,
        eos_token=tok.EOS,
        clean_up_tokenization_spaces=False,
        padding_side="left",  # generation pads prompts on the left (all addition prompts have one length anyway)
        model_max_length=model_max_length if model_max_length is not None else int(1e30),
    )
    if fast.pad_token_id != tok.pad_id or fast.eos_token_id != tok.eos_id:  # pragma: no cover - a tokenizers change
        raise RuntimeError(f"hf_tokenizer: pad/eos ids {fast.pad_token_id}/{fast.eos_token_id}, "
                           f"expected {tok.pad_id}/{tok.eos_id}")
    return fast


def parse_prompt(task: AdditionTask, prompt: str) -> tuple[int, int]:
    """``"07+58="`` -> (7, 58): the operands of a prompt written by ``task.prompt_text``."""
    if len(prompt) != task.prompt_len or prompt[-1] != "=" or prompt[task.n_digits] != "+":
        raise ValueError(f"parse_prompt: {prompt!r} is not an addition prompt of {task.n_digits} digits")
    return int(prompt[: task.n_digits]), int(prompt[task.n_digits + 1 : -1])


def prompt_dataset(task: AdditionTask, pairs: torch.Tensor):
    """A ``datasets.Dataset`` of addition prompts (column ``"prompt"``, plus the operands ``"a"``, ``"b"``)."""
    from datasets import Dataset

    return Dataset.from_dict({
        "prompt": task.prompt_texts(pairs),
        "a": pairs[:, 0].tolist(),
        "b": pairs[:, 1].tolist(),
    })


def preference_dataset(records: list[dict]):
    """TRL's standard preference format (``export.trl_preference``) as a ``datasets.Dataset``.

    The same records that ``export.write_jsonl`` writes; ``datasets.load_dataset("json",
    data_files=path)["train"]`` on that file gives an equal data set.
    """
    from datasets import Dataset

    return Dataset.from_list([{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in records])


def addition_reward(task: AdditionTask, tok: CharTokenizer | None = None):
    """The task's verifiable reward as a TRL reward function (``GRPOTrainer(reward_funcs=...)``).

    TRL calls it with the prompts (text), the completions (text, specials dropped) and the
    ``completion_ids`` (ids up to and including the first EOS). The reward is computed on the ids, so
    it is exactly ``task.reward``: 1.0 for the sum's digits followed by EOS, else 0.0 (an answer cut at
    ``max_completion_length`` without EOS scores 0).
    """
    tok = tok or task.tokenizer

    def addition_correct(prompts, completions, completion_ids, **kwargs) -> list[float]:
        pairs = torch.tensor([parse_prompt(task, p) for p in prompts], dtype=torch.long)  # (B, 2)
        width = max([len(ids) for ids in completion_ids] + [1])
        padded = torch.full((len(completion_ids), width), tok.pad_id, dtype=torch.long)
        for row, ids in enumerate(completion_ids):
            padded[row, : len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
        return task.reward(pairs, padded).tolist()

    return addition_correct

