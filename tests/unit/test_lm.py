"""The byte-level GPT: causal, weight-tied, FLOPs counted as nanoGPT does, and it learns."""

import math

import pytest
import torch

from orchestrator.lm import GPT, GPTShape, flops_per_token, loss, num_params

TINY = GPTShape(n_layer=2, n_head=2, d_model=32, block_size=16)


def test_a_token_changes_no_logit_before_it():
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    tokens = torch.randint(0, 256, (2, 16))
    changed = tokens.clone()
    changed[:, 9] = (changed[:, 9] + 1) % 256
    before, after = model(tokens), model(changed)
    assert before.shape == (2, 16, 256)
    assert torch.equal(before[:, :9], after[:, :9]) and not torch.allclose(before[:, 9:], after[:, 9:])


def test_the_head_is_the_embedding_and_counted_once():
    model = GPT(TINY)
    assert model.head.weight is model.tok.weight
    per_block = 12 * 32 * 32 + 13 * 32  # qkv, proj, mlp weights and biases, two LayerNorms
    assert num_params(model) == 2 * per_block + 256 * 32 + 2 * 32  # blocks, tied embedding, final norm
    assert num_params(model, non_embedding=False) == num_params(model) + 16 * 32


def test_flops_per_token_of_gpt2_small_follow_6n_plus_attention():
    model = GPT(GPTShape(n_layer=12, n_head=12, d_model=768, block_size=1024))
    n = num_params(model)
    assert 85e6 < n < 86e6  # GPT-2 small's 85M non-embedding weights (+ a 256-byte vocabulary)
    assert flops_per_token(model) == 6 * n + 12 * 12 * 768 * 1024


def test_too_long_a_context_is_refused():
    with pytest.raises(ValueError, match="block size"):
        GPT(TINY)(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="divide"):
        GPTShape(n_layer=1, n_head=3, d_model=32, block_size=8)


def test_it_learns_text_below_its_unigram_entropy():
    torch.manual_seed(0)
    text = torch.tensor(list(b"the quick brown fox jumps over the lazy dog. " * 40))
    counts = torch.bincount(text, minlength=256).double()
    p = counts[counts > 0] / counts.sum()
    unigram = -(p * p.log()).sum().item()  # nats per byte of the best model that ignores context
    model = GPT(TINY)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    starts = torch.arange(0, len(text) - TINY.block_size - 1)
    for _ in range(150):
        idx = starts[torch.randint(len(starts), (16,))]
        x = torch.stack([text[i : i + TINY.block_size] for i in idx])
        y = torch.stack([text[i + 1 : i + 1 + TINY.block_size] for i in idx])
        step_loss = loss(model(x), y)
        opt.zero_grad()
        step_loss.backward()
        opt.step()
    print(f"byte LM: loss {step_loss.item():.3f} nats/byte, unigram entropy {unigram:.3f}")
    assert step_loss.item() < 0.5 * unigram and math.isfinite(step_loss.item())
