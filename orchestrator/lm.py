"""A decoder-only Transformer language model over bytes (GPT-2's shape), and its FLOP count.

Pre-norm blocks, causal self-attention through F.scaled_dot_product_attention (flash or
memory-efficient kernels on GPU), GELU MLP, learned positions, and the output projection
tied to the token embedding. Tokens are bytes (vocab 256), so any text file is a corpus.

    model = GPT(GPTShape(n_layer=12, n_head=12, d_model=768, block_size=1024))  # GPT-2 small
    logits = model(tokens)  # [B, T] int64 -> [B, T, vocab]
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True)
class GPTShape:
    n_layer: int
    n_head: int
    d_model: int
    block_size: int  # longest context, tokens
    vocab_size: int = 256  # bytes
    dropout: float = 0.0

    def __post_init__(self):
        if self.d_model % self.n_head:
            raise ValueError(f"n_head ({self.n_head}) must divide d_model ({self.d_model})")


class _Block(nn.Module):
    def __init__(self, s: GPTShape):
        super().__init__()
        self.n_head, self.dropout = s.n_head, s.dropout
        self.ln_1 = nn.LayerNorm(s.d_model)
        self.qkv = nn.Linear(s.d_model, 3 * s.d_model)
        self.proj = nn.Linear(s.d_model, s.d_model)
        self.ln_2 = nn.LayerNorm(s.d_model)
        self.mlp = nn.Sequential(nn.Linear(s.d_model, 4 * s.d_model), nn.GELU(approximate="tanh"),
                                 nn.Linear(4 * s.d_model, s.d_model), nn.Dropout(s.dropout))

    def forward(self, x, mask=None):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=mask is None)
        x = x + F.dropout(self.proj(y.transpose(1, 2).reshape(b, t, d)), self.dropout, self.training)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, shape: GPTShape, activation_checkpointing: bool = False):
        super().__init__()
        self.shape = shape
        self.activation_checkpointing = activation_checkpointing
        self.tok = nn.Embedding(shape.vocab_size, shape.d_model)
        self.pos = nn.Embedding(shape.block_size, shape.d_model)
        self.drop = nn.Dropout(shape.dropout)
        self.blocks = nn.ModuleList(_Block(shape) for _ in range(shape.n_layer))
        self.ln_f = nn.LayerNorm(shape.d_model)
        self.head = nn.Linear(shape.d_model, shape.vocab_size, bias=False)
        self.head.weight = self.tok.weight  # weight tying: one matrix embeds and unembeds
        # ...and is saved once (safetensors refuses aliased tensors): head.weight is tok.weight on load
        self.register_state_dict_post_hook(_drop_tied_head)
        self.register_load_state_dict_pre_hook(_tie_head)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: residual projections scaled by depth
            if name.endswith(("proj.weight", "mlp.2.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / (2 * shape.n_layer) ** 0.5)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, tokens: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
        """Next-token logits [B, T, vocab]. `pad` [B]: left padding of each row (batched generation
        of prompts of different lengths); padded positions are neither attended to nor counted."""
        t = tokens.shape[1]
        if t > self.shape.block_size:
            raise ValueError(f"{t} tokens exceed the block size {self.shape.block_size}")
        positions = torch.arange(t, device=tokens.device)
        mask = None
        if pad is not None:
            real = positions[None, :] >= pad[:, None]  # [B, T]
            causal = torch.ones(t, t, dtype=torch.bool, device=tokens.device).tril()
            # a padding query attends to itself only, so no row of the softmax is empty
            mask = ((causal & real[:, None, :]) | torch.eye(t, dtype=torch.bool, device=tokens.device))[:, None]
            positions = (positions[None, :] - pad[:, None]).clamp(min=0)
        x = self.drop(self.tok(tokens) + self.pos(positions))
        for block in self.blocks:
            if self.activation_checkpointing and self.training:
                x = checkpoint(block, x, mask, use_reentrant=False)
            else:
                x = block(x, mask)
        return self.head(self.ln_f(x))


def _drop_tied_head(module, state_dict, prefix, local_metadata):
    state_dict.pop(prefix + "head.weight", None)


def _tie_head(module, state_dict, prefix, *args):
    if prefix + "tok.weight" in state_dict:
        state_dict[prefix + "head.weight"] = state_dict[prefix + "tok.weight"]


@dataclass(frozen=True)
class Sampling:
    """How one prompt is continued."""

    max_new_tokens: int = 200
    temperature: float = 0.8  # 0: always the most likely byte
    top_k: int | None = 50  # sample among the k most likely bytes
    seed: int | None = None  # the same seed, prompt and model give the same text


def generate(model: GPT, prompts: list[bytes], sampling: list[Sampling]) -> list[bytes]:
    """Continue each prompt by its own sampling settings, all rows in one forward pass per byte (`steps`)."""
    rows = [bytearray() for _ in prompts]
    for step in steps(model, prompts, sampling):
        for row, byte in zip(rows, step):
            row.append(byte)
    return [bytes(row[: s.max_new_tokens]) for row, s in zip(rows, sampling)]


@torch.no_grad()  # on a generator function: around each step, in whichever thread runs it
def steps(model: GPT, prompts: list[bytes], sampling: list[Sampling]) -> Iterator[list[int]]:
    """The next byte of every prompt, step by step (a stream shows each as it comes), for the most
    max_new_tokens asked: prompts left-padded to one length, one forward pass per step for all, the context
    the last block_size bytes."""
    if any(not p for p in prompts):
        raise ValueError("every prompt needs at least one byte")
    model.eval()
    device = next(model.parameters()).device
    block = model.shape.block_size
    prompts = [p[-block:] for p in prompts]
    width = max(map(len, prompts))
    seq = torch.zeros(len(prompts), width, dtype=torch.long, device=device)
    for i, p in enumerate(prompts):
        seq[i, width - len(p):] = torch.tensor(list(p), device=device)
    pad = torch.tensor([width - len(p) for p in prompts], device=device)
    generators = [torch.Generator().manual_seed(s.seed if s.seed is not None else torch.seed()) for s in sampling]
    for _ in range(max(s.max_new_tokens for s in sampling)):
        ctx, ctx_pad = seq[:, -block:], (pad - max(seq.shape[1] - block, 0)).clamp(min=0)
        logits = model(ctx, ctx_pad if bool(ctx_pad.any()) else None)[:, -1, :].float().cpu()
        nxt = [_sample(row, s, g) for row, s, g in zip(logits, sampling, generators)]
        seq = torch.cat([seq, torch.tensor(nxt, device=device)[:, None]], dim=1)
        yield nxt


def _sample(logits: torch.Tensor, s: Sampling, generator: torch.Generator) -> int:
    if s.temperature == 0:
        return int(logits.argmax())
    # in float64 (a float32 1e-40 is 0), the best at 0: a tiny temperature gives -inf to the rest, never inf - inf
    logits = (logits.double() - logits.max()) / s.temperature
    if s.top_k is not None and s.top_k < len(logits):
        logits[logits < torch.topk(logits, s.top_k).values[-1]] = -float("inf")
    return int(torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator))


def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy, nats per token."""
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))


def num_params(model: GPT, non_embedding: bool = True) -> int:
    """Parameters, the tied embedding counted once; without position embeddings by default
    (they cost no matmul FLOPs)."""
    n = sum(p.numel() for p in model.parameters())
    return n - model.pos.weight.numel() if non_embedding else n


def flops_per_token(model: GPT, seq_len: int | None = None) -> float:
    """Training FLOPs per token: 6N for the weights' matmuls (forward and backward) plus
    12·L·d·T for attention scores and values (PaLM's appendix B; nanoGPT's estimate_mfu)."""
    s = model.shape
    return 6 * num_params(model) + 12 * s.n_layer * s.d_model * (seq_len or s.block_size)


def step_throughput(config: dict) -> dict:
    """Tokens/s of config["steps"] training steps on random bytes, after config["warmup"] steps
    (benchmarks/gpu_mfu.py; here so a Ray worker imports it rather than unpickling it). On GPU:
    bf16 autocast, TF32, fused AdamW, and torch.compile if config["compile"]."""
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.set_num_threads(config["cpu_threads"])  # as many as Ray gives its worker: a like-for-like CPU figure
    torch.manual_seed(0)
    model = GPT(GPTShape(**config["shape"])).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, fused=cuda)
    step_model = torch.compile(model) if config["compile"] else model
    b, t = config["batch_size"], config["shape"]["block_size"]
    x = torch.randint(0, 256, (b, t + 1), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)

    def step():
        with autocast:
            step_loss = loss(step_model(x[:, :-1]), x[:, 1:])
        step_loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(config["warmup"]):
        step()
    if cuda:
        torch.cuda.synchronize()
    tick = time.perf_counter()
    for _ in range(config["steps"]):
        step()
    if cuda:
        torch.cuda.synchronize()
    tokens_per_s = config["steps"] * b * t / (time.perf_counter() - tick)
    return {"tokens_per_s": tokens_per_s, "flops_per_token": flops_per_token(model, t),
            "device": torch.cuda.get_device_name() if cuda else "cpu"}
