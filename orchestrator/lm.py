"""A decoder-only Transformer language model over bytes (GPT-2's shape), and its FLOP count.

Pre-norm blocks, causal self-attention through F.scaled_dot_product_attention (flash or
memory-efficient kernels on GPU), GELU MLP, learned positions, and the output projection
tied to the token embedding. Tokens are bytes (vocab 256), so any text file is a corpus.

    model = GPT(GPTShape(n_layer=12, n_head=12, d_model=768, block_size=1024))  # GPT-2 small
    logits = model(tokens)  # [B, T] int64 -> [B, T, vocab]
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


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

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        x = x + F.dropout(self.proj(y.transpose(1, 2).reshape(b, t, d)), self.dropout, self.training)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, shape: GPTShape):
        super().__init__()
        self.shape = shape
        self.tok = nn.Embedding(shape.vocab_size, shape.d_model)
        self.pos = nn.Embedding(shape.block_size, shape.d_model)
        self.drop = nn.Dropout(shape.dropout)
        self.blocks = nn.ModuleList(_Block(shape) for _ in range(shape.n_layer))
        self.ln_f = nn.LayerNorm(shape.d_model)
        self.head = nn.Linear(shape.d_model, shape.vocab_size, bias=False)
        self.head.weight = self.tok.weight  # weight tying: one matrix embeds and unembeds
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

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        if t > self.shape.block_size:
            raise ValueError(f"{t} tokens exceed the block size {self.shape.block_size}")
        x = self.drop(self.tok(tokens) + self.pos(torch.arange(t, device=tokens.device)))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


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
