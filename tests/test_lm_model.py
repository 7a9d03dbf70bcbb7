"""rlnotes.lm.tokenizer and rlnotes.lm.model: ids by hand, causality, the KV cache, a reference attention."""

import pytest
import torch
import torch.nn.functional as F

from rlnotes.lm.model import GPT, GPTConfig
from rlnotes.lm.tokenizer import CharTokenizer

torch.set_num_threads(1)


# ---------------------------------------------------------------- tokenizer


def test_tokenizer_ids_by_hand_and_round_trip():
    tok = CharTokenizer("0123456789+=")
    assert (tok.pad_id, tok.eos_id, tok.vocab_size) == (0, 1, 14)
    assert tok.encode("07+58=") == [2, 9, 12, 7, 10, 13]  # '0' -> 2, '7' -> 9, '+' -> 12, '5' -> 7, '8' -> 10, '=' -> 13
    assert tok.encode("65", eos=True) == [8, 7, 1]
    assert tok.decode([8, 7, 1, 0, 0]) == "65"  # stops at EOS
    assert tok.decode([8, 7, 1, 9], stop_at_eos=True) == "65"  # nothing after EOS is read
    assert tok.decode(torch.tensor([8, 7, 1, 0]), stop_at_eos=False) == "65<eos><pad>"
    for text in ["0", "99+99=", "123"]:
        assert tok.decode(tok.encode(text)) == text


def test_tokenizer_rejects_bad_input():
    with pytest.raises(ValueError, match="chars"):
        CharTokenizer("00")
    tok = CharTokenizer("01")
    with pytest.raises(ValueError, match="text"):
        tok.encode("012")
    with pytest.raises(ValueError, match="id 7"):
        tok.decode([7])


# ---------------------------------------------------------------- model


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    config = GPTConfig(**{"vocab_size": 14, "block_size": 10, "n_layer": 2, "n_head": 4, "n_embd": 64, **kw})
    model = GPT(config).eval()
    # GPT-2's initialisation gives near-uniform logits; scale weights up so that differences show
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(5.0)
    return model


def test_parameter_count_by_formula():
    # per block: 2 LayerNorms (2 * 2C), qkv (C*3C + 3C), attention projection (C*C + C), MLP (C*4C + 4C + 4C*C + C)
    V, T, C, L = 14, 10, 64, 2
    block = 2 * 2 * C + (3 * C * C + 3 * C) + (C * C + C) + (4 * C * C + 4 * C + 4 * C * C + C)
    expected = V * C + T * C + L * block + 2 * C + C * V  # embeddings, blocks, final LayerNorm, head (no bias)
    assert _model().num_parameters() == expected == 102_528


def test_config_rejects_bad_shapes():
    with pytest.raises(ValueError, match="n_embd"):
        GPTConfig(vocab_size=5, block_size=4, n_head=3, n_embd=64)
    with pytest.raises(ValueError, match="block_size"):
        GPTConfig(vocab_size=5, block_size=0)
    with pytest.raises(ValueError, match="block_size"):
        _model()(torch.zeros(1, 11, dtype=torch.long))


def test_attention_matches_torch_reference():
    """The written-out attention equals torch's fused causal scaled_dot_product_attention."""
    model = _model().double()
    attn = model.blocks[0].attn
    x = torch.randn(3, 7, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    B, T, C = x.shape
    q, k, v = attn.c_attn(x).split(C, dim=2)
    q, k, v = (t.view(B, T, 4, C // 4).transpose(1, 2) for t in (q, k, v))
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C)
    torch.testing.assert_close(attn(x), attn.c_proj(y), atol=1e-10, rtol=1e-10)


def test_model_is_causal():
    """Changing token t changes no logits before position t."""
    model = _model()
    g = torch.Generator().manual_seed(2)
    idx = torch.randint(14, (4, 10), generator=g)
    changed = idx.clone()
    changed[:, 6] = (changed[:, 6] + 1) % 14
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :6], b[:, :6])
    assert (a[:, 6:] - b[:, 6:]).abs().max() > 1e-3


def test_kv_cache_gives_the_full_forward_logits():
    model = _model().double()  # float64: the two paths differ only by rounding
    idx = torch.randint(14, (5, 9), generator=torch.Generator().manual_seed(3))
    full = model(idx)
    cache = []
    pieces = [model(idx[:, :6], cache)] + [model(idx[:, t : t + 1], cache) for t in range(6, 9)]
    torch.testing.assert_close(torch.cat(pieces, 1), full, atol=1e-10, rtol=1e-10)
    assert len(cache) == 2 and cache[0][0].shape == (5, 4, 9, 16)  # (B, nh, T, hs) per layer


def test_generate_greedy_equals_a_plain_argmax_loop_and_pads_after_eos():
    model = _model(seed=4)
    prompts = torch.randint(2, 14, (16, 5), generator=torch.Generator().manual_seed(5))
    out = model.generate(prompts, 5, temperature=0.0, eos_id=1, pad_id=0)
    # slow reference: no cache, no EOS handling, then pad after the first EOS by hand
    idx = prompts
    for _ in range(5):
        idx = torch.cat([idx, model(idx)[:, -1].argmax(-1, keepdim=True)], 1)
    expected = idx.clone()
    for row in expected:
        eos = (row[5:] == 1).nonzero()
        if len(eos):
            row[5 + int(eos[0]) + 1 :] = 0
    torch.testing.assert_close(out, expected[:, : out.shape[1]])
    assert out.shape[1] == 10 or bool((out[:, 5:] == 1).any(-1).all())  # stops early only when every row ended


def test_generate_samples_from_softmax_over_temperature():
    """A model whose next-token distribution is known: the sampled frequencies match it."""
    model = _model(seed=6)
    prompt = torch.tensor([[2, 3, 4]]).repeat(20_000, 1)
    for temperature in (1.0, 0.5):
        probs = F.softmax(model(prompt[:1])[0, -1] / temperature, -1)
        first = model.generate(prompt, 1, temperature, torch.Generator().manual_seed(7))[:, -1]
        freq = torch.bincount(first, minlength=14).float() / len(first)
        assert (freq - probs).abs().max() < 4 * (0.25 / len(first)) ** 0.5 + 1e-3
    with pytest.raises(ValueError, match="temperature"):
        model.generate(prompt[:1], 1, temperature=-1.0)
