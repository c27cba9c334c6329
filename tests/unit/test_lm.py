"""The byte-level GPT: causal, weight-tied, FLOPs counted as nanoGPT does, and it learns."""

import math

import pytest
import torch

from orchestrator.lm import GPT, GPTShape, Sampling, flops_per_token, generate, loss, num_params

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


def test_batched_generation_with_left_padding_equals_one_prompt_at_a_time():
    torch.manual_seed(0)
    model = GPT(TINY)
    prompts = [b"a", b"hello there, a long prompt past the block size", b"xyz"]
    greedy = Sampling(max_new_tokens=20, temperature=0)
    alone = [generate(model, [p], [greedy])[0] for p in prompts]
    together = generate(model, prompts, [greedy] * 3)
    assert together == alone and all(len(t) == 20 for t in together)
    tiny = Sampling(max_new_tokens=20, temperature=1e-300, seed=0)  # logits / T overflow: still a distribution
    assert generate(model, prompts, [tiny] * 3) == alone
    # per-row settings: a seed repeats its text, another seed (or none) is free to differ
    seeded = [Sampling(max_new_tokens=30, temperature=1.0, top_k=None, seed=s) for s in (1, 1, 2)]
    a, b, c = generate(model, [b"q"] * 3, seeded)
    assert a == b and a != c
    short = generate(model, [b"q", b"q"], [Sampling(max_new_tokens=3), Sampling(max_new_tokens=9)])
    assert [len(t) for t in short] == [3, 9]


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    plain = GPT(TINY)
    recomputed = GPT(TINY, activation_checkpointing=True)
    recomputed.load_state_dict(plain.state_dict())
    x = torch.randint(0, 256, (2, 17))
    for model in (plain, recomputed):
        loss(model(x[:, :-1]), x[:, 1:]).backward()
    assert all(torch.allclose(p.grad, q.grad, atol=1e-6) for p, q in zip(plain.parameters(), recomputed.parameters()))


def test_the_tied_head_is_saved_once_and_tied_again_on_load():
    state = GPT(TINY).state_dict()
    assert "head.weight" not in state and "tok.weight" in state
    model = GPT(TINY)
    model.load_state_dict(state)
    assert model.head.weight is model.tok.weight and torch.equal(model.tok.weight, state["tok.weight"])
