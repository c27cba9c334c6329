"""Model zoo by name: mlp, cnn, rnn, transformer classifiers, and the gpt language model. Plain PyTorch.

Every classifier takes raw features [B, *input_shape] and returns logits [B, num_classes]. The
training-split normalization is a buffer of the model, so it is saved in the same
safetensors file and serving can never apply different statistics than training did.
A classifier of text (data.text_column: input_dtype int64) takes the bytes of each text as token ids
[B, T] (byte_text.py): the rnn and transformer embed them and leave the padding out. A text beside a table's
columns (data.feature_columns too) comes as the first T of a sample's float features, the table's after.
The language model (lm.py) takes bytes [B, T] and returns next-byte logits [B, T, 256].
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from orchestrator import byte_text
from orchestrator.blanks import FillBlanks
from orchestrator.config import CNNConfig, GPTConfig, MLPConfig, ModelConfig, RNNConfig, TransformerConfig
from orchestrator.errors import ConfigError


class Normalize(nn.Module):
    def __init__(self, mean: np.ndarray, std: np.ndarray):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(np.asarray(mean, dtype=np.float32)))
        self.register_buffer("std", torch.as_tensor(np.asarray(std, dtype=np.float32)))

    def forward(self, x):
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    def __init__(self, normalize: Normalize, body: nn.Module, fill: nn.Module | None = None):
        super().__init__()
        self.fill = fill or nn.Identity()  # a table's blank cells (blanks.py)
        self.normalize = normalize
        self.body = body

    def forward(self, x):
        return self.body(self.normalize(self.fill(x)))


def build_model(cfg: ModelConfig, input_shape, num_classes: int, mean=None, std=None,
                input_dtype: str = "float32", blanks: dict | None = None, text_bytes: int | None = None) -> nn.Module:
    """The model for this input shape; mean/std default to identity (they are loaded from checkpoints).
    gpt: input_shape is [block_size] and num_classes the vocabulary (256 bytes). input_dtype int64: a
    classifier of text, input_shape [text_bytes]. `blanks`: a table's features with blank cells (blanks.py),
    which the model fills, adding a 0/1 feature per column with blanks. `text_bytes`: a text beside a
    table's columns, its bytes the first text_bytes features."""
    input_shape = tuple(int(s) for s in input_shape)
    fill = None
    if blanks:
        fill, input_shape = FillBlanks(blanks), (input_shape[0] + len(blanks["flags"]),)
    if isinstance(cfg, GPTConfig):
        return _gpt(cfg, input_shape, num_classes)
    if (input_dtype == "int64" or text_bytes) and not isinstance(cfg, (RNNConfig, TransformerConfig)):
        raise ConfigError(f"model {cfg.name!r} takes numbers, and data.text_column gives it text: use model.name "
                          "rnn or transformer, which read a text's bytes in order")
    if input_dtype == "int64":
        return Classifier(nn.Identity(), _TextBody(cfg, input_shape[0], num_classes))
    if text_bytes:
        body = _TextTableBody(cfg, text_bytes, input_shape[0] - text_bytes, num_classes)
    else:
        body = {"mlp": _mlp, "cnn": _cnn, "rnn": _rnn, "transformer": _transformer}[cfg.name](cfg, input_shape,
                                                                                               num_classes)
    stat_shape = _stat_shape(input_shape)
    mean = np.zeros(stat_shape, np.float32) if mean is None else mean
    std = np.ones(stat_shape, np.float32) if std is None else std
    return Classifier(Normalize(mean, std), body, fill)


def model_for(cfg: ModelConfig, info: dict, normalized: bool = False) -> nn.Module:
    """build_model for the data that `info` describes (data.Splits.info(), a checkpoint's model_info);
    `normalized`: with its training-split normalization (else identity, for weights loaded after)."""
    norm = info["normalization"] if normalized else {}
    return build_model(cfg, info["input_shape"], len(info["label_names"]), norm.get("mean"), norm.get("std"),
                       info.get("input_dtype", "float32"), info.get("blanks"), info.get("text_bytes"))


def describe(cfg: ModelConfig, info: dict) -> dict:
    """`info` (the data's) with the model's family and size: a checkpoint's model_info."""
    return {**info, "family": cfg.name, "num_parameters": num_parameters(model_for(cfg, info))}


def _stat_shape(input_shape) -> tuple[int, ...]:
    """Shape of per-channel statistics (see data.channel_stats)."""
    if len(input_shape) == 3:
        return (input_shape[0], 1, 1)
    return (1,) * (len(input_shape) - 1) + (input_shape[-1],)


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- families ---------------------------------------------------------------------------


def _mlp(cfg: MLPConfig, input_shape, num_classes):
    act = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}[cfg.activation]
    layers: list[nn.Module] = [nn.Flatten()]
    width = math.prod(input_shape)
    for hidden in cfg.hidden_sizes:
        layers += [nn.Linear(width, hidden), act(), nn.Dropout(cfg.dropout)]
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def _image_shape(input_shape, family: str):
    if len(input_shape) == 2:
        return (1, *input_shape)
    if len(input_shape) != 3:
        shape = _square_image(math.prod(input_shape)) if len(input_shape) == 1 else None
        raise ConfigError(
            f"model {family!r} needs image-shaped features [C, H, W], got {list(input_shape)}: set "
            + (f"data.feature_shape: {shape} (a table of pixels, one image a row)" if shape else "data.feature_shape")
            + ", or use model.name: mlp"
        )
    return input_shape


def _square_image(width: int) -> list[int] | None:
    """The square image, gray or RGB, whose pixels a table's row of `width` features may be (Kaggle's MNIST CSVs:
    784, 28x28); None."""
    for channels in (1, 3):
        side = math.isqrt(width // channels)
        if side >= 8 and channels * side * side == width:
            return [channels, side, side]
    return None


class _AddChannel(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.shape = shape

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)


def _cnn(cfg: CNNConfig, input_shape, num_classes):
    c, h, w = _image_shape(input_shape, "cnn")
    layers: list[nn.Module] = [_AddChannel((c, h, w))]
    for out in cfg.channels:
        layers += [nn.Conv2d(c, out, cfg.kernel_size, padding=cfg.kernel_size // 2), nn.BatchNorm2d(out), nn.ReLU()]
        if min(h, w) >= 2:  # pool while there is something to pool
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        c = out
    features = nn.Sequential(*layers)
    with torch.no_grad():
        flat = features(torch.zeros(1, *input_shape)).numel()
    head = [nn.Flatten(), nn.Dropout(cfg.dropout), nn.Linear(flat, cfg.hidden_size), nn.ReLU()]
    head += [nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden_size, num_classes)]
    return nn.Sequential(features, *head)


def _sequence_shape(input_shape):
    """[T, F] view of a sample: an image's rows, a [T, F] sample as is, a vector as F steps of 1."""
    if len(input_shape) == 3:
        c, h, w = input_shape
        return h, c * w
    if len(input_shape) == 2:
        return input_shape
    return input_shape[0], 1


class _AsSequence(nn.Module):
    def __init__(self, input_shape):
        super().__init__()
        self.channels_first = len(input_shape) == 3
        self.seq_shape = _sequence_shape(input_shape)

    def forward(self, x):
        if self.channels_first:  # [B, C, H, W] -> [B, H, C*W]: each row is one step
            x = x.permute(0, 2, 1, 3)
        return x.reshape(x.shape[0], -1, self.seq_shape[1])  # -1: a batch of texts is as long as its longest


class _RNNBody(nn.Module):
    def __init__(self, cfg: RNNConfig, input_shape, num_classes):
        super().__init__()
        steps, feats = _sequence_shape(input_shape)
        self.as_sequence = _AsSequence(input_shape)
        rnn = nn.LSTM if cfg.cell == "lstm" else nn.GRU
        self.rnn = rnn(
            feats,
            cfg.hidden_size,
            num_layers=cfg.num_layers,
            batch_first=True,
            bidirectional=cfg.bidirectional,
            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,
        )
        out = cfg.hidden_size * (2 if cfg.bidirectional else 1)
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(out, num_classes))

    def forward(self, x, steps=None):
        """`steps`: [B, T] bool, the steps to average (a text's bytes, not its padding); default every step."""
        seq, _ = self.rnn(self.as_sequence(x))
        if steps is None:
            return self.head(seq.mean(dim=1))  # mean over steps: uses every row, not only the last
        steps = steps.unsqueeze(-1).to(seq.dtype)
        return self.head((seq * steps).sum(dim=1) / steps.sum(dim=1).clamp(min=1))


def _rnn(cfg: RNNConfig, input_shape, num_classes):
    return _RNNBody(cfg, input_shape, num_classes)


class _TransformerBody(nn.Module):
    def __init__(self, cfg: TransformerConfig, input_shape, num_classes, embed: nn.Module | None = None):
        """`embed`: from a [T, F] sample to tokens [T, d_model]; default a linear map."""
        super().__init__()
        self.patch = None
        if len(input_shape) == 3:
            c, h, w = input_shape
            p = cfg.patch_size
            if h % p or w % p:
                raise ConfigError(f"model.patch_size {p} must divide the image size {h}x{w}")
            self.patch = nn.Conv2d(c, cfg.d_model, kernel_size=p, stride=p)  # patch embedding
            num_tokens = (h // p) * (w // p)
        else:
            num_tokens, feats = _sequence_shape(input_shape)
            self.as_sequence = _AsSequence(input_shape)
            self.embed = nn.Linear(feats, cfg.d_model) if embed is None else embed
        self.cls = nn.Parameter(torch.zeros(1, 1, cfg.d_model))
        self.pos = nn.Parameter(torch.randn(1, num_tokens + 1, cfg.d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            cfg.d_model, cfg.num_heads, cfg.ff_size, cfg.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, num_classes)

    def forward(self, x, steps=None):
        """`steps`: [B, T] bool, the tokens to attend to (a text's bytes, not its padding); default every one."""
        if self.patch is not None:
            tokens = self.patch(x).flatten(2).transpose(1, 2)  # [B, num_patches, d_model]
        else:
            tokens = self.embed(self.as_sequence(x))
        tokens = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1)
        tokens = tokens + self.pos[:, : tokens.shape[1]]  # fewer than all: a batch of short texts
        padding = None if steps is None else torch.cat([torch.zeros_like(steps[:, :1]), ~steps], dim=1)
        return self.head(self.norm(self.encoder(tokens, src_key_padding_mask=padding))[:, 0])


def _transformer(cfg: TransformerConfig, input_shape, num_classes):
    return _TransformerBody(cfg, input_shape, num_classes)


class _TextBody(nn.Module):
    """An rnn or transformer over a text's bytes [B, T] (token ids, byte_text.py): each byte embedded, the
    padding after the text left out of attention and of the mean over steps. So a batch is cut to its longest
    text (short texts train faster), except for a two-way rnn, whose backward direction starts at the end of
    the padding: every text is padded alike for it, to text_bytes, in training and serving. (Packed
    sequences would spare it the padding, but run at half the speed on CPU.)"""

    def __init__(self, cfg: RNNConfig | TransformerConfig, length: int, num_classes: int):
        super().__init__()
        width = cfg.hidden_size if isinstance(cfg, RNNConfig) else cfg.d_model
        self.embed = nn.Embedding(byte_text.VOCAB_SIZE, width, padding_idx=byte_text.PAD)
        self.cut = not (isinstance(cfg, RNNConfig) and cfg.bidirectional)
        if isinstance(cfg, RNNConfig):
            self.rnn = _RNNBody(cfg, (length, width), num_classes)
        else:
            self.transformer = _TransformerBody(cfg, (length, width), num_classes, embed=nn.Identity())

    def forward(self, tokens):
        text = tokens != byte_text.PAD  # the padding follows the text: a text of n bytes is its first n tokens
        if self.cut:
            longest = max(int(text.sum(dim=1).max()), 1)
            tokens, text = tokens[:, :longest], text[:, :longest]
        x = self.embed(tokens)
        if hasattr(self, "rnn"):
            return self.rnn(x, text)
        return self.transformer(x, text)


class _TextTableBody(nn.Module):
    """A text beside a table's columns (a review and its rating): the text's bytes, the first `length`
    features, read by a _TextBody into a vector, which is joined to the table's (normalized) features for
    an MLP of one hidden layer to classify; so the text and the columns are learnt together, end to end."""

    def __init__(self, cfg: RNNConfig | TransformerConfig, length: int, num_features: int, num_classes: int):
        super().__init__()
        width = cfg.hidden_size if isinstance(cfg, RNNConfig) else cfg.d_model
        self.length = length
        self.text = _TextBody(cfg, length, width)  # its head maps what it read of the text to `width` numbers
        self.head = nn.Sequential(nn.Linear(width + num_features, width), nn.ReLU(), nn.Dropout(cfg.dropout),
                                  nn.Linear(width, num_classes))

    def forward(self, x):
        tokens = x[:, : self.length].long()  # token ids, carried as floats (exact: 0..256)
        return self.head(torch.cat([torch.relu(self.text(tokens)), x[:, self.length :]], dim=1))


def _gpt(cfg: GPTConfig, input_shape, vocab_size: int):
    from orchestrator.lm import GPT, GPTShape

    if len(input_shape) != 1:
        raise ConfigError(f"model 'gpt' reads byte sequences [T], got samples of shape {list(input_shape)}: use data.name: text")
    shape = GPTShape(n_layer=cfg.n_layer, n_head=cfg.n_head, d_model=cfg.d_model, block_size=input_shape[0],
                     vocab_size=vocab_size, dropout=cfg.dropout)
    return GPT(shape, activation_checkpointing=cfg.activation_checkpointing)
