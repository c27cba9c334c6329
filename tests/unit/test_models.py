import re

import pytest
import torch

from orchestrator.config import CNNConfig, MLPConfig, RNNConfig, TransformerConfig
from orchestrator.errors import ConfigError
from orchestrator.blanks import FillBlanks
from orchestrator.models import build_model

FAMILIES = {
    "mlp": MLPConfig(name="mlp", hidden_sizes=[16]),
    "cnn": CNNConfig(name="cnn", channels=[4, 8], hidden_size=16),
    "rnn": RNNConfig(name="rnn", hidden_size=8, num_layers=2, bidirectional=True),
    "gru": RNNConfig(name="rnn", cell="gru", hidden_size=8),
    "transformer": TransformerConfig(name="transformer", d_model=16, num_heads=2, ff_size=32),
}
SHAPES = {"image": (1, 8, 8), "image2d": (8, 8), "sequence": (5, 6), "vector": (12,)}


CASES = [(f, s) for f in FAMILIES for s in SHAPES if not (f == "cnn" and s in ("sequence", "vector"))]  # cnn: images only


@pytest.mark.parametrize("family, shape", CASES)
def test_every_family_maps_inputs_to_logits_and_learns(family, shape):
    input_shape = SHAPES[shape]
    torch.manual_seed(0)
    model = build_model(FAMILIES[family], input_shape, num_classes=3)
    x, y = torch.randn(6, *input_shape), torch.tensor([0, 1, 2, 0, 1, 2])
    logits = model(x)
    assert logits.shape == (6, 3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(100):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]  # can fit six samples: gradients reach every layer


def test_normalization_is_part_of_the_model_state():
    mean, std = torch.full((1, 1, 1), 5.0), torch.full((1, 1, 1), 2.0)
    model = build_model(FAMILIES["mlp"], (1, 8, 8), 3, mean.numpy(), std.numpy())
    assert torch.equal(model.state_dict()["normalize.mean"], mean)
    x = torch.full((1, 1, 8, 8), 7.0)
    assert torch.allclose(model.normalize(x), torch.ones_like(x))


def test_shape_mismatches_are_config_errors():
    with pytest.raises(ConfigError, match=r"image-shaped features \[C, H, W\], got \[12\]: set data.feature_shape, or"):
        build_model(FAMILIES["cnn"], (12,), 3)
    for width, shape in ((784, [1, 28, 28]), (3072, [3, 32, 32])):  # Kaggle's MNIST CSV, CIFAR-10 as a table
        with pytest.raises(ConfigError, match=re.escape(f"set data.feature_shape: {shape} (a table of pixels")):
            build_model(FAMILIES["cnn"], (width,), 3)
    with pytest.raises(ConfigError, match="patch_size 3 must divide"):
        build_model(TransformerConfig(name="transformer", patch_size=3, d_model=16, num_heads=2), (1, 8, 8), 3)


def test_dropout_is_active_only_in_training():
    model = build_model(MLPConfig(name="mlp", hidden_sizes=[64], dropout=0.5), (10,), 2)
    x = torch.randn(4, 10)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("family", ["rnn", "gru", "transformer"])
def test_a_model_of_text_reads_its_bytes_and_not_the_padding(family):
    from orchestrator.byte_text import encode

    torch.manual_seed(0)
    model = build_model(FAMILIES[family], (12,), 2, input_dtype="int64").eval()
    assert "normalize.mean" not in model.state_dict()  # token ids are not scaled
    texts = ["good film", "bad", "", "great fun!"]  # each within the 12 bytes
    x = torch.from_numpy(encode(texts, 12))
    assert model(x).shape == (4, 2)
    # a text's answer does not depend on the other texts of its batch (a batch is cut to its longest text)
    alone = torch.cat([model(x[i : i + 1]) for i in range(4)])
    assert torch.allclose(alone, model(x), atol=1e-5)
    # nor, but for a two-way rnn (whose backward direction reads the padding, to text_bytes: see _TextBody), on
    # the model's length: the model at a longer length, its weights the same
    if family != "rnn":
        longer = build_model(FAMILIES[family], (20,), 2, input_dtype="int64").eval()
        state = model.state_dict()
        if family == "transformer":  # the positions of the 8 more steps are never attended to
            pos = longer.state_dict()["body.transformer.pos"]
            state = {**state, "body.transformer.pos": torch.cat([state["body.transformer.pos"], pos[:, 13:]], 1)}
        longer.load_state_dict(state)
        assert torch.allclose(longer(torch.from_numpy(encode(texts, 20))), model(x), atol=1e-5)
    # it learns which word a text holds
    words = ["good", "bad"]
    train = [f"the film was {words[i % 2]}" for i in range(16)]
    x, y = torch.from_numpy(encode(train, 20)), torch.tensor([i % 2 for i in range(16)])
    model = build_model(FAMILIES[family], (20,), 2, input_dtype="int64")
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (model.eval()(x).argmax(1) == y).all()


def test_a_model_of_numbers_given_text_is_a_config_error():
    for family in ("mlp", "cnn"):
        for beside in (False, True):  # the text alone, or beside a table's columns
            with pytest.raises(ConfigError, match=f"model '{family}' takes numbers, and data.text_column gives it "
                                                  "text: use model.name rnn or transformer"):
                build_model(FAMILIES[family], (12,), 2, **({"text_bytes": 8} if beside else {"input_dtype": "int64"}))


@pytest.mark.parametrize("family", ["gru", "transformer"])
def test_a_text_beside_a_tables_columns_is_learnt_with_them(family, tmp_path):
    """A class that neither the text nor the number tells alone (good or bad words, XOR a price over 0)."""
    from orchestrator.byte_text import encode
    from orchestrator.checkpoint import read_checkpoint, write_checkpoint
    from orchestrator.config import config_from_dict

    torch.manual_seed(0)
    good = torch.rand(128) < 0.5
    texts = [f"{'a good' if g else 'a bad'} one" for g in good.tolist()]
    price, blank = torch.randn(128), torch.rand(128) < 0.1
    x = torch.cat([torch.from_numpy(encode(texts, 12)).float(), price[:, None].masked_fill(blank[:, None], 0)], 1)
    y = (good ^ (price > 0)).long()
    blanks = {"index": [12], "fill": [0.0], "flags": [12]}  # the price's blank cells: filled, and a flag
    x[blank, 12] = float("nan")
    model = build_model(FAMILIES[family], (13,), 2, mean=torch.zeros(14), std=torch.ones(14), blanks=blanks,
                        text_bytes=12)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(200):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()
    known = ~blank & (price.abs() > 0.05)  # a blank price (or one at the fill) cannot tell the class
    assert (model(x).argmax(1) == y)[known].float().mean() > 0.95
    # a text's bytes are read as the model of text alone reads them: not the padding, whatever its batch
    assert torch.allclose(torch.cat([model(x[i : i + 1]) for i in range(8)]), model(x[:8]), atol=1e-5)
    cfg = config_from_dict({"name": "t", "data": {"name": "digits"}, "model": FAMILIES[family].model_dump()})
    info = {"input_shape": [13], "label_names": ["a", "b"], "normalization": {}, "data_fingerprint": "x",
            "blanks": blanks, "text_bytes": 12}
    write_checkpoint(str(tmp_path / "ckpt"), model=model, config=cfg, model_info=info, metrics={})
    assert torch.equal(read_checkpoint(str(tmp_path / "ckpt")).model()(x), model(x))


def test_a_model_fills_blank_cells_and_learns_from_a_cell_being_blank(tmp_path):
    from orchestrator.checkpoint import read_checkpoint, write_checkpoint
    from orchestrator.config import config_from_dict

    blanks = {"index": [1, 2], "fill": [40.0, 9.5], "flags": [1, 2]}
    x = torch.tensor([[1.0, float("nan"), 3.0], [4.0, 5.0, float("nan")]])
    # the blanks filled with their medians, then a 0/1 flag per blank feature
    assert torch.equal(FillBlanks(blanks)(x), torch.tensor([[1.0, 40.0, 3.0, 1.0, 0.0], [4.0, 5.0, 9.5, 0.0, 1.0]]))
    # a class that only a cell being blank tells: learnt from the flag (the filled value alone is a common value)
    torch.manual_seed(0)
    rows = torch.randn(256, 3)
    y = (torch.rand(256) < 0.5).long()
    rows[y == 1, 1] = float("nan")
    rows[(y == 0) & (torch.rand(256) < 0.3), 1] = 0.0  # the fill value is frequent among the known cells
    model = build_model(FAMILIES["mlp"], (3,), 2, blanks={**blanks, "fill": [0.0, 0.0]})
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(rows), y)
        loss.backward()
        optimizer.step()
    model.eval()
    assert (model(rows).argmax(1) == y).float().mean() > 0.97
    # the fill travels in the checkpoint, as the model's buffers
    cfg = config_from_dict({"name": "t", "data": {"name": "digits"}, "model": FAMILIES["mlp"].model_dump()})
    info = {"input_shape": [3], "label_names": ["a", "b"], "normalization": {}, "data_fingerprint": "x",
            "blanks": {**blanks, "fill": [0.0, 0.0]}}
    write_checkpoint(str(tmp_path / "ckpt"), model=model, config=cfg, model_info=info, metrics={})
    assert torch.equal(read_checkpoint(str(tmp_path / "ckpt")).model()(rows), model(rows))
