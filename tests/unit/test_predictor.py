"""Decode/validate, predict, encode without Ray; the endpoint's auth rule and its canary."""

import asyncio
import json

import numpy as np
import pandas as pd
import pytest
import torch
from starlette.requests import Request

from orchestrator.checkpoint import write_checkpoint
from orchestrator.config import ServeArgs, config_from_dict, parse
from orchestrator.errors import ConfigError, DataError
from orchestrator.models import build_model
from orchestrator.errors import RequestError
from orchestrator.predictor import Predictor
from orchestrator.auth import ApiKeys
from orchestrator.endpoint import Endpoint
from tests.conftest import form

CFG = config_from_dict({"name": "t", "data": {"name": "digits"}, "model": {"name": "mlp", "hidden_sizes": [16]}})
INFO = {"input_shape": [2, 3], "label_names": ["a", "b", "c"], "normalization": {}, "data_fingerprint": "x"}


def write(path, broken=False) -> str:
    torch.manual_seed(0)
    model = build_model(CFG.model, INFO["input_shape"], 3)
    if broken:
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
    write_checkpoint(str(path), model=model, config=CFG, model_info=INFO, metrics={"val_accuracy": 0.5})
    return str(path)


@pytest.fixture
def predictor(tmp_path):
    return Predictor.load(write(tmp_path / "ckpt"), max_instances=3)


def test_round_trip_matches_the_model(predictor):
    x = np.random.default_rng(0).normal(size=(3, 2, 3)).tolist()
    out = predictor.encode(predictor.predict(predictor.decode(json.dumps({"instances": x}).encode())))
    logits = predictor.model(torch.tensor(x, dtype=torch.float32))
    assert [p["class_index"] for p in out["predictions"]] == logits.argmax(1).tolist()
    assert [p["label"] for p in out["predictions"]] == [["a", "b", "c"][i] for i in logits.argmax(1).tolist()]
    assert all(abs(sum(p["probabilities"]) - 1) < 1e-5 for p in out["predictions"])
    assert out["model"] == {"name": "t", "version": predictor.version} and len(predictor.version) == 12
    assert predictor.decode(b'{"instances": [[[1, 2, 3], [4, 5, 6]]]}').dtype == np.float32  # ints are numbers
    flat = predictor.decode(b'{"instances": [[1, 2, 3, 4, 5, 6]]}')  # a flat row fills the shape row-major
    assert flat.tolist() == [[[1, 2, 3], [4, 5, 6]]]


@pytest.mark.parametrize("body, status, code", [
    (b"\xff\xfe", 400, "invalid_json"),
    (b"[1, 2]", 400, "missing_instances"),
    (b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", 400, "invalid_json"),  # beyond the parser's depth
    (b'{"instances": {"a": 1}}', 422, "invalid_instances"),
    (b'{"instances": []}', 422, "no_instances"),
    (b'{"instances": [[[0,0,0],[0,0,0]], [[0,0,0],[0,0,0]], [[0,0,0],[0,0,0]], [[0,0,0],[0,0,0]]]}', 422,
     "too_many_instances"),
    (b'{"instances": [[0, 0, 0, 0, 0]]}', 422, "wrong_shape"),
    (b'{"instances": [[[0,0,0],[0,0]]]}', 422, "wrong_shape"),
    (b'{"instances": [[["0","0","0"],["0","0","0"]]]}', 422, "wrong_type"),
    (b'{"instances": [[[0,0,0],[0,0,{}]]]}', 422, "wrong_type"),
    (b'{"instances": [[[0,0,0],[0,0,123456789012345678901234567890]]]}', 422, "wrong_type"),
    (b'{"instances": [[[0,0,0],[0,0,NaN]]]}', 422, "not_finite"),
    (b'{"instances": [[[0,0,0],[0,0,1e300]]]}', 422, "not_finite"),
    (b'{"instances": [], "inputs": []}', 400, "several_bodies"),
    (b'{"dataframe_records": []}', 422, "no_instances"),
    (b'{"dataframe_split": {"columns": ["a"]}}', 422, "invalid_dataframe_split"),
    (b'{"dataframe_split": {"columns": ["a"], "data": [[1, 2]]}}', 422, "invalid_dataframe_split"),
    (b'{"inputs": {"a": [1], "b": [1, 2]}}', 422, "invalid_inputs"),
])
def test_bad_requests_are_refused_with_a_reason(predictor, body, status, code):
    with pytest.raises(RequestError) as e:
        predictor.decode(body)
    assert (e.value.status, e.value.code) == (status, code) and e.value.message


TABLE = {"name": "t", "data": {"name": "files", "path": "t.csv", "label_column": "kind"},
         "model": {"name": "mlp", "hidden_sizes": [8]}}


def write_model_of(cfg, path) -> tuple[Predictor, dict]:
    """An untrained model of cfg.data, as training would build it, saved at `path`: its Predictor and model_info."""
    from orchestrator import data, models

    info = models.describe(cfg.model, data.load_splits(cfg.data, 0).info())
    torch.manual_seed(0)
    write_checkpoint(str(path), model=models.model_for(cfg.model, info, normalized=True), config=cfg, model_info=info,
                     metrics={})
    return Predictor.load(str(path)), info


def write_table_model(path, columns: list[str], input_shape: list[int]) -> str:
    cfg = config_from_dict(TABLE)
    torch.manual_seed(0)
    info = {**INFO, "input_shape": input_shape, "feature_columns": columns}
    write_checkpoint(str(path), model=build_model(cfg.model, input_shape, 3), config=cfg, model_info=info,
                     metrics={})
    return str(path)


TEXT_CFG = config_from_dict({"name": "t", "model": {"name": "rnn", "hidden_size": 8},
                             "data": {"name": "files", "path": "t.csv", "label_column": "kind",
                                      "text_column": "note", "text_bytes": 8}})


def write_text_model(path) -> str:
    """An untrained model of the text in column 'note' (its first 8 bytes), of 3 classes."""
    torch.manual_seed(0)
    info = {**INFO, "input_shape": [8], "input_dtype": "int64", "feature_columns": ["note"], "text_column": "note"}
    write_checkpoint(str(path), model=build_model(TEXT_CFG.model, [8], 3, input_dtype="int64"), config=TEXT_CFG,
                     model_info=info, metrics={})
    return str(path)


def write_image_model(path) -> str:
    """An untrained CNN of 4x4 grayscale images, cat or dog."""
    cfg = config_from_dict({"name": "pets", "data": {"name": "digits"}, "model": {"name": "cnn", "channels": [4]}})
    torch.manual_seed(0)
    write_checkpoint(str(path), model=build_model(cfg.model, [1, 4, 4], 2), config=cfg, metrics={},
                     model_info={**INFO, "input_shape": [1, 4, 4], "label_names": ["cat", "dog"]})
    return str(path)


def test_a_table_model_takes_rows_by_column_name_in_any_key_order(tmp_path):
    predictor = Predictor.load(write_table_model(tmp_path / "ckpt", ["width", "area", "mass"], [3]))
    assert predictor.info["input"]["columns"] == ["width", "area", "mass"]
    rows = [{"mass": 3.0, "width": 1.0, "area": 2.0}, {"area": 5, "kind": "b", "mass": 6, "width": 4}]
    assert np.array_equal(predictor.validate(rows), np.array([[1, 2, 3], [4, 5, 6]], np.float32))
    # keys the model does not take (the label, an id, a column training left out) are left, as training left them
    extra = [{**row, "id": f"r{i}", "colour": None} for i, row in enumerate(rows)]
    assert np.array_equal(predictor.validate(extra), predictor.validate(rows))
    for bad, code, words in [
        ([{"width": 1, "area": 2}], "wrong_columns", "missing columns ['mass']"),
        ([{"width": 1, "aera": 2, "mass": 3}], "wrong_columns", "missing columns ['area'], unknown columns ['aera']"),
        ([{"width": 1, "area": 2, "mass": 3}, [1, 2, 3]], "wrong_type", "instance 1 is not an object"),
        ([{"width": 1, "area": "2", "mass": 3}], "wrong_type", "instance 0: 'area' takes a number, got \"2\""),
        ([{"width": 1, "area": None, "mass": 3}], "wrong_type", "instance 0: 'area' takes a number, got null"),
        ([{"width": 1, "area": 2, "mass": 3}, {"width": 1, "area": 2, "mass": "?"}], "wrong_type",
         "instance 1: 'mass' takes a number, got \"?\""),
        ([{"width": 1, "area": [2, 2], "mass": 3}], "wrong_shape", ""),
    ]:
        with pytest.raises(RequestError) as e:
            predictor.validate(bad)
        assert (e.value.status, e.value.code) == (422, code) and words in e.value.message
    # the columns fill the input shape as they did in training (data.feature_shape)
    image = Predictor.load(write_table_model(tmp_path / "image", [f"p{i}" for i in range(6)], [2, 3]))
    assert image.validate([{f"p{i}": i for i in range(6)}]).tolist() == [[[0, 1, 2], [3, 4, 5]]]


def test_a_table_model_fills_a_null_where_training_saw_blank_cells_and_refuses_it_elsewhere(tmp_path, capsys):
    from orchestrator.cli import main
    from orchestrator.evaluate import evaluate_on_data

    cfg = config_from_dict({**TABLE, "data": {**TABLE["data"], "label_column": "label"}})
    blanks = {"index": [1], "features": ["area"], "fill": [2.5], "columns": ["area"], "flags": [1], "blank_rows": [7]}
    info = {**INFO, "input_shape": [3], "feature_columns": ["width", "area", "mass"], "blanks": blanks}
    torch.manual_seed(0)
    write_checkpoint(str(tmp_path / "ckpt"), model=build_model(cfg.model, [3], 3, blanks=blanks), config=cfg,
                     model_info=info, metrics={})
    predictor = Predictor.load(str(tmp_path / "ckpt"))
    described = predictor.info["input"]
    assert described["blank_columns"] == ["area"] and described["blank_fill"] == {"area": 2.5}
    named = predictor.validate([{"width": 1, "area": None, "mass": 3}, {"width": 4, "area": 5, "mass": 6}])
    listed = predictor.validate([[1, None, 3], [4, 5, 6]])  # a row as a list: null in its place
    assert np.array_equal(named, listed, equal_nan=True) and np.isnan(named[0, 1]) and named[1].tolist() == [4, 5, 6]
    probs = predictor.predict(named)
    filled = torch.tensor([[1, 2.5, 3, 1], [4, 5, 6, 0]])  # what the model sees: the median, and the blank flag
    assert np.allclose(probs, torch.softmax(predictor.model.body(predictor.model.normalize(filled)), -1).detach())
    for bad, words in [([{"width": None, "area": 1, "mass": 3}], "instance 0: 'width' takes a number, got null "
                                                                  "(null is taken for ['area']"),
                       ([[None, 1, 3]], "instance 0 holds NaN, Infinity or a number beyond float32 (null is taken "
                                        "for ['area'] only"),
                       ([[1, "2", None]], "instances must hold only numbers")]:
        with pytest.raises(RequestError) as e:
            predictor.validate(bad)
        assert e.value.status == 422 and words in e.value.message, e.value.message
    # a file of rows: a blank cell goes as null, for the model to fill, or to be named where it cannot
    (tmp_path / "rows.csv").write_text("width,area,mass,label\n1,,3,a\n4,5,6,b\n")
    assert main(["predict", str(tmp_path / "ckpt"), "--input", str(tmp_path / "rows.csv"), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    np.testing.assert_allclose([p["probabilities"] for p in answer["predictions"]], probs, atol=1e-6)
    (tmp_path / "bad.csv").write_text("width,area,mass,label\n,2,3,a\n")
    assert main(["predict", str(tmp_path / "ckpt"), "--input", str(tmp_path / "bad.csv")]) == 2
    assert "'width' takes a number, got null" in capsys.readouterr().err
    # evaluate --data fills as the endpoint does; a blank the model cannot fill is named
    metrics = evaluate_on_data(str(tmp_path / "ckpt"), str(tmp_path / "rows.csv"))["metrics"]
    assert metrics["loss"] == pytest.approx(float(-np.log(probs[[0, 1], [0, 1]]).mean()), rel=1e-5)
    (tmp_path / "partly.csv").write_text("width,area,mass,label\n7,8,9,\n1,,3,a\n4,5,6,b\n")  # a row not labelled yet
    scored = evaluate_on_data(str(tmp_path / "ckpt"), str(tmp_path / "partly.csv"))
    assert scored["num_rows"] == 2 and scored["metrics"] == metrics  # scored on the labelled rows, the others said
    assert "1 of 3 rows have no 'label' (the first is row 1 of the data): left out" in capsys.readouterr().out
    with pytest.raises(DataError, match=r"columns \['width'\] have blank cells, and the model fills only those that "
                                        r"training saw blank \(\['area'\]\)"):
        evaluate_on_data(str(tmp_path / "ckpt"), str(tmp_path / "bad.csv"))
    (tmp_path / "blank.csv").write_text("width,area,mass,kind\n1,,3,a\n")  # to a model trained without blanks
    with pytest.raises(DataError, match=r"columns \['area'\] have blank cells, and the model saw no blank cell in "
                                        "training: fill them in"):
        whole = write_table_model(tmp_path / "whole", ["width", "area", "mass"], [3])
        evaluate_on_data(whole, str(tmp_path / "blank.csv"))


def test_a_table_model_takes_dates_as_iso_text_and_encodes_them_as_training_did(tmp_path, capsys):
    from orchestrator import blanks, data
    from orchestrator.cli import main

    (tmp_path / "rows.csv").write_text("size,when,label\n1,2026-01-05T10:30:00Z,a\n2,2026-03-01,b\n3,,a\n")
    read = data.load_arrays(data.FilesData(name="files", path=str(tmp_path / "rows.csv")), seed=0)  # as training
    fills = blanks.find(read.x, np.arange(3), blanks.table_features(read.feature_columns, None, read.dates))
    assert fills["columns"] == ["when"] and fills["index"] == list(range(1, 8)) and fills["flags"] == [1]  # one flag
    info = {**INFO, "input_shape": [8], "feature_columns": ["size", "when"], "dates": ["when"], "blanks": fills}
    cfg = config_from_dict({**TABLE, "data": {**TABLE["data"], "label_column": "label"}})
    torch.manual_seed(0)
    write_checkpoint(str(tmp_path / "ckpt"), model=build_model(cfg.model, [8], 3, blanks=fills), config=cfg,
                     model_info=info, metrics={})
    predictor = Predictor.load(str(tmp_path / "ckpt"))
    assert predictor.info["input"]["dates"] == ["when"] and predictor.fillable_columns == ["when"]
    rows = [{"size": 1, "when": "2026-01-05T10:30:00Z"}, {"size": 2, "when": "2026-03-01"}, {"size": 3, "when": None}]
    x = predictor.validate(rows)
    np.testing.assert_array_equal(x, read.x)
    assert np.isnan(x[2, 1:]).all()
    for value, words in [("05/01/2026", "instance 0: 'when': '05/01/2026' is not a date: send ISO 8601"),
                         (20260105, "instance 0: 'when' takes a date as text, such as \"2026-01-05\"")]:
        with pytest.raises(RequestError) as e:
            predictor.validate([{"size": 1, "when": value}])
        assert e.value.status == 422 and words in e.value.message, e.value.message
    # predict --input: a file's dates go as text, the blank one as null
    assert main(["predict", str(tmp_path / "ckpt"), "--input", str(tmp_path / "rows.csv"), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    np.testing.assert_allclose([p["probabilities"] for p in answer["predictions"]], predictor.predict(x), atol=1e-6)


def test_a_date_column_written_other_than_iso_takes_that_form_and_iso_8601(tmp_path):
    from orchestrator import data

    (tmp_path / "rows.csv").write_text("size,when,label\n1,3/15/2025,a\n2,12/1/2024,b\n3,7/4/2025,a\n")
    read = data.load_arrays(data.FilesData(name="files", path=str(tmp_path / "rows.csv")), seed=0)  # as training
    assert read.written_forms == {"when": "%m/%d/%Y"}
    info = {**INFO, "input_shape": [8], "feature_columns": ["size", "when"], "dates": ["when"],
            "written_forms": read.written_forms}
    cfg = config_from_dict({**TABLE, "data": {**TABLE["data"], "label_column": "label"}})
    write_checkpoint(str(tmp_path / "ckpt"), model=build_model(cfg.model, [8], 3), config=cfg, model_info=info,
                     metrics={})
    predictor = Predictor.load(str(tmp_path / "ckpt"))
    assert predictor.info["input"]["written_forms"] == {"when": "%m/%d/%Y"}
    rows = [{"size": 1, "when": "3/15/2025"}, {"size": 2, "when": "2024-12-01"}, {"size": 3, "when": "07/04/2025"}]
    np.testing.assert_array_equal(predictor.validate(rows), read.x)
    with pytest.raises(RequestError) as e:
        predictor.validate([{"size": 1, "when": "15/3/2025"}])
    assert e.value.status == 422 and ("'15/3/2025' is not a date: send ISO 8601, such as \"2026-01-05\" or "
                                      "\"2026-01-05T10:30:00Z\", or as in training, \"01/05/2026\"") in e.value.message


def test_a_number_column_written_with_a_currency_sign_takes_that_form_and_plain_numbers(tmp_path, capsys):
    from orchestrator import blanks, data
    from orchestrator.cli import main

    cfg = config_from_dict(TABLE)
    info = {**INFO, "input_shape": [2], "feature_columns": ["price", "size"], "written_forms": {"price": "$#"}}
    write_checkpoint(str(tmp_path / "ckpt"), model=build_model(cfg.model, [2], 3), config=cfg, model_info=info,
                     metrics={})
    predictor = Predictor.load(str(tmp_path / "ckpt"))
    assert predictor.info["input"]["written_forms"] == {"price": "$#"}
    rows = [{"price": "$1,234.50", "size": 1}, {"price": 1234.5, "size": 1}, {"price": "-$3", "size": 2}]
    assert predictor.validate(rows).tolist() == [[1234.5, 1], [1234.5, 1], [-3, 2]]
    for value in ("€5", "five", None, "", True):
        with pytest.raises(RequestError) as e:
            predictor.validate([{"price": value, "size": 1}])
        assert e.value.status == 422 and "'price': " in e.value.message and "is not a number written as '$1,234.5'" \
            in e.value.message, e.value.message
    # where training saw a blank price, a blank cell of an input file is filled as training filled it
    (tmp_path / "rows.csv").write_text('price,size,label\n"$1,234.50",1,a\n,2,b\n$7,3,a\n')
    read = data.load_arrays(data.FilesData(name="files", path=str(tmp_path / "rows.csv")), seed=0)
    fills = blanks.find(read.x, np.arange(3), read.features())
    cfg = config_from_dict({**TABLE, "data": {**TABLE["data"], "label_column": "label"}})
    assert read.written_forms == {"price": "$#"} and fills["columns"] == ["price"]
    write_checkpoint(str(tmp_path / "filled"), model=build_model(cfg.model, [2], 3, blanks=fills), config=cfg,
                     metrics={}, model_info={**info, "blanks": fills})
    assert main(["predict", str(tmp_path / "filled"), "--input", str(tmp_path / "rows.csv"), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    expected = Predictor.load(str(tmp_path / "filled")).predict(read.x)
    np.testing.assert_allclose([p["probabilities"] for p in answer["predictions"]], expected, atol=1e-6)


def test_a_table_model_takes_text_columns_by_value_as_training_encoded_them(tmp_path, capsys):
    cfg = config_from_dict(TABLE)
    torch.manual_seed(0)
    info = {**INFO, "input_shape": [4], "feature_columns": ["size", "colour"],
            "categories": {"colour": ["", "blue", "red"]}}
    write_checkpoint(str(tmp_path / "ckpt"), model=build_model(cfg.model, [4], 3), config=cfg, model_info=info,
                     metrics={})
    predictor = Predictor.load(str(tmp_path / "ckpt"))
    assert predictor.info["input"]["categories"] == {"colour": ["", "blue", "red"]}
    rows = [{"colour": "red", "size": 2}, {"size": 3, "colour": ""}, {"size": 1, "colour": "green"}]
    # a category never seen in training turns on no feature
    assert predictor.validate(rows).tolist() == [[2, 0, 0, 1], [3, 1, 0, 0], [1, 0, 0, 0]]
    # the same rows in the bodies of TF Serving, KServe, MLflow and pandas (to_json orient split and columns)
    import pandas as pd

    frame = pd.DataFrame(rows)
    for body in ({"instances": rows}, {"dataframe_records": rows}, {"inputs": rows}, {"params": {}, "inputs": rows},
                 {"dataframe_split": json.loads(frame.to_json(orient="split"))},
                 {"inputs": frame.to_dict(orient="list")}):
        assert predictor.decode(json.dumps(body).encode()).tolist() == [[2, 0, 0, 1], [3, 1, 0, 0], [1, 0, 0, 0]]
    for value in (7, None, ["red"]):
        with pytest.raises(RequestError) as e:
            predictor.validate([{"size": 1, "colour": value}])
        assert (e.value.status, e.value.code) == (422, "wrong_type")
        assert "'colour' takes text, such as \"\", \"blue\", \"red\"" in e.value.message
    with pytest.raises(RequestError, match="missing columns"):
        predictor.validate([{"size": 1}])
    # predict --input sends a table's text as it is, a blank cell as "", training's category for it
    from orchestrator.datafiles import read_rows

    (tmp_path / "rows.csv").write_text("colour,size\nred,2\n,3\ngreen,1\n")
    assert read_rows(str(tmp_path / "rows.csv")) == [{"colour": c, "size": n} for c, n in [("red", 2), ("", 3),
                                                                                          ("green", 1)]]
    # as Excel in a German locale on Windows saves it (semicolons, decimal commas, cp1252): with --encoding, the
    # same predictions as for its UTF-8 twin and as for the rows sent as they are
    from orchestrator.cli import main

    table = "colour;size\nred;2,5\ngrün;3\n"
    (tmp_path / "utf8.csv").write_text(table)
    (tmp_path / "windows.csv").write_bytes(table.encode("cp1252"))
    answers = []
    for name, extra in [("utf8.csv", []), ("windows.csv", ["--encoding", "cp1252"])]:
        assert main(["predict", str(tmp_path / "ckpt"), "--input", str(tmp_path / name), "--json", *extra]) == 0
        answers.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["predictions"])
    rows = [{"colour": "red", "size": 2.5}, {"colour": "grün", "size": 3}]
    assert answers[0] == answers[1] == predictor.encode(predictor.predict(predictor.validate(rows)))["predictions"]
    assert main(["predict", str(tmp_path / "ckpt"), "--input", str(tmp_path / "windows.csv")]) == 2
    assert "windows.csv is not utf-8 text: row 2 of column 'colour'" in capsys.readouterr().err
    # a checkpoint trained on such files reads them so by default (as evaluate --data does)
    german = cfg.model_copy(update={"data": cfg.data.model_copy(update={"encoding": "cp1252"})})
    write_checkpoint(str(tmp_path / "de"), model=predictor.model, config=german, model_info=info, metrics={})
    assert main(["predict", str(tmp_path / "de"), "--input", str(tmp_path / "windows.csv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["predictions"] == answers[0]


def test_a_model_of_text_takes_texts_and_reads_them_as_training_did(tmp_path, capsys):
    from orchestrator.byte_text import encode
    from orchestrator.datafiles import read_rows
    from orchestrator.evaluate import evaluate_on_data

    cfg = config_from_dict({"name": "t", "model": {"name": "rnn", "hidden_size": 8},
                            "data": {"name": "files", "path": "t.csv", "label_column": "kind", "text_column": "note",
                                     "text_bytes": 8}})
    torch.manual_seed(0)
    model = build_model(cfg.model, [8], 3, input_dtype="int64")
    info = {**INFO, "input_shape": [8], "input_dtype": "int64", "feature_columns": ["note"], "text_column": "note"}
    write_checkpoint(str(tmp_path / "ckpt"), model=model, config=cfg, model_info=info, metrics={})
    predictor = Predictor.load(str(tmp_path / "ckpt"))
    assert predictor.info["input"]["text_column"] == "note" and predictor.canary()
    # a string, or an object keyed by the column (with the other columns of a training row): the same bytes
    x = predictor.validate(["a fine film", {"note": "a fine film", "kind": "b", "id": 7}, {"note": ""}])
    assert x.dtype == np.int64 and x.tolist() == encode(["a fine fi", "a fine fi", ""], 8).tolist()
    for bad, code, words in [
        ([3], "wrong_type", "instance 0: this model classifies text ('note'): send a string, got 3"),
        (["ok", None], "wrong_type", "instance 1: this model classifies text ('note'): send a string, got null"),
        ([{"text": "x"}], "wrong_columns", 'instance 0: send {"note": "text"}, or the text alone'),
        ([{"text": "x", "size": 1}], "wrong_columns", "got the keys ['size', 'text']"),
    ]:
        with pytest.raises(RequestError) as e:
            predictor.validate(bad)
        assert (e.value.status, e.value.code) == (422, code) and words in e.value.message
    # predict --input rows.csv, and evaluate --data on the same file, read the text as the endpoint does
    (tmp_path / "rows.csv").write_text('id,note,kind\n1,"good, and long",a\n2,bad,b\n3,,c\n')
    probs = predictor.predict(predictor.validate(read_rows(str(tmp_path / "rows.csv"))))
    with torch.no_grad():
        assert np.allclose(probs, torch.softmax(model.eval()(torch.from_numpy(
            encode(["good, an", "bad", ""], 8))), 1).numpy(), atol=1e-6)
    result = evaluate_on_data(str(tmp_path / "ckpt"), str(tmp_path / "rows.csv"))
    assert result["metrics"]["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == [0, 1, 2]))
    # predict --input texts.txt: a text a line (blank lines skipped)
    from orchestrator.cli import main

    (tmp_path / "texts.txt").write_text("good, and long\n\nbad\n")
    assert main(["predict", str(tmp_path / "ckpt"), "--input", str(tmp_path / "texts.txt"), "--json"]) == 0
    answers = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["predictions"]
    assert np.allclose([a["probabilities"] for a in answers], probs[:2], atol=1e-6)
    (tmp_path / "long.txt").write_text("a\tfine film, " + "truly " * 10 + "\n")
    assert main(["predict", str(tmp_path / "ckpt"), "--input", str(tmp_path / "long.txt")]) == 0
    assert capsys.readouterr().out.startswith("a fine film, truly truly truly truly...\t")  # the text, on one line


def test_a_model_of_a_folder_of_texts_scores_a_folder_of_them(tmp_path, capsys):
    """Trained on IMDB's layout (train/pos/1.txt, ...), `predict --input test/pos` scores each file as one text, and
    `evaluate --data test` reads the folder's classes as training read them; before, the folder was read as a
    table ("cannot tell the format")."""
    from orchestrator.cli import main
    from orchestrator.evaluate import evaluate_on_data

    for split in ("train", "test"):
        for label in ("pos", "neg"):
            (tmp_path / "imdb" / split / label).mkdir(parents=True)
            for i in range(6):
                word = "great" if label == "pos" else "dull"
                (tmp_path / "imdb" / split / label / f"{i}.txt").write_text(f"{label} {word} film {i}")
    cfg = config_from_dict({"name": "t", "model": {"name": "rnn", "cell": "gru", "hidden_size": 8},
                            "data": {"name": "files", "path": str(tmp_path / "imdb" / "train"), "text_bytes": 16}})
    predictor, info = write_model_of(cfg, tmp_path / "ckpt")
    texts = [(tmp_path / "imdb" / "test" / "pos" / f"{i}.txt").read_text() for i in range(6)]
    expected = [predictor.labels[i] for i in predictor.predict(predictor.validate(texts)).argmax(1)]
    assert main(["predict", str(tmp_path / "ckpt"), "--input", str(tmp_path / "imdb" / "test" / "pos"), "--json"]) == 0
    assert [p["label"] for p in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["predictions"]] == expected
    assert main(["predict", str(tmp_path / "ckpt"), "--input", str(tmp_path / "imdb" / "test" / "pos"), "--output",
                 str(tmp_path / "scored.csv")]) == 0
    assert pd.read_csv(tmp_path / "scored.csv")["file"].str.endswith("pos/0.txt").iloc[0]
    evaluated = evaluate_on_data(str(tmp_path / "ckpt"), str(tmp_path / "imdb" / "test"))
    assert evaluated["num_rows"] == 12 and [c["support"] for c in evaluated["per_class"]] == [6, 6]


def test_a_model_of_a_text_beside_columns_takes_rows_by_column_and_reads_them_as_training_did(tmp_path, capsys):
    from orchestrator import data, datafiles

    (tmp_path / "rows.csv").write_text("id,note,stars,kind,label\n" + "".join(
        f"{i},{['fine', 'poor', 'a long note'][i % 3]},{'' if i == 4 else i % 5},{['x', 'y'][i % 2]},{'ab'[i % 2]}\n"
        for i in range(30)))
    cfg = config_from_dict({"name": "t", "model": {"name": "rnn", "cell": "gru", "hidden_size": 8},
                            "data": {"name": "files", "path": str(tmp_path / "rows.csv"), "text_column": "note",
                                     "text_bytes": 6, "feature_columns": ["stars", "kind"]}})
    predictor, info = write_model_of(cfg, tmp_path / "ckpt")
    assert predictor.info["input"]["columns"] == ["note", "stars", "kind"] and predictor.canary()
    # the rows of the file as objects (their other keys left), in any key order: the features training read
    rows = datafiles.read_rows(str(tmp_path / "rows.csv"))
    x = predictor.validate([dict(reversed(row.items())) for row in rows])
    trained = data.load_arrays(cfg.data, 0, known=info).x
    assert np.array_equal(x, trained, equal_nan=True) and np.isnan(x[4, 6])  # the blank stars: filled by the model
    assert np.array_equal(predictor.validate([{"note": None, "stars": 1, "kind": "x"}])[0, :6], np.zeros(6))  # no text
    assert np.array_equal(predictor.validate(trained[:3].tolist()), trained[:3])  # a row as its features, as a list
    for bad, words in [([{"note": 3, "stars": 1, "kind": "x"}], "instance 0: 'note' takes text, got 3"),
                       ([{"stars": 1, "kind": "x"}], "instance 0: missing columns ['note']"),
                       ([[0.5] + [1] * 8], "the first 6 numbers of a row are the bytes of its text ('note', token "
                                           "ids 0..256): send rows as objects keyed by column name")]:
        with pytest.raises(RequestError) as e:
            predictor.validate(bad)
        assert e.value.status == 422 and words in e.value.message, e.value.message
    assert_evaluate_and_predict_read_the_file_alike(predictor, x, tmp_path, capsys)


def assert_evaluate_and_predict_read_the_file_alike(predictor, x, tmp_path, capsys):
    """evaluate --data and predict --input read tmp_path/rows.csv (labels a, b, a, ...) as the endpoint reads
    its rows into `x`."""
    from orchestrator.cli import main
    from orchestrator.evaluate import evaluate_on_data

    probs = predictor.predict(x)
    result = evaluate_on_data(str(tmp_path / "ckpt"), str(tmp_path / "rows.csv"))
    assert result["metrics"]["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == np.arange(len(x)) % 2))
    assert main(["predict", str(tmp_path / "ckpt"), "--input", str(tmp_path / "rows.csv"), "--json"]) == 0
    answers = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["predictions"]
    assert np.allclose([a["probabilities"] for a in answers], probs, atol=1e-6)


def test_a_model_of_several_text_columns_takes_each_by_name_and_joins_them_as_training_did(tmp_path, capsys):
    from orchestrator import data, datafiles, models
    from orchestrator.byte_text import join

    (tmp_path / "rows.csv").write_text("id,title,note,stars,label\n" + "".join(
        f"{i},{['Late', '', 'Broken'][i % 3]},{['fine', 'poor', 'a long note'][i % 3]},{i % 5},{'ab'[i % 2]}\n"
        for i in range(30)))
    for beside in ([], ["stars"]):
        cfg = config_from_dict({"name": "t", "model": {"name": "rnn", "cell": "gru", "hidden_size": 8},
                                "data": {"name": "files", "path": str(tmp_path / "rows.csv"), "text_bytes": 12,
                                         "text_column": ["title", "note"], "feature_columns": beside or None}})
        splits = data.load_splits(cfg.data, 0)
        info = models.describe(cfg.model, splits.info())
        assert (info["text_column"], info["text_parts"]) == ("title+note", ["title", "note"])
        torch.manual_seed(0)
        write_checkpoint(str(tmp_path / "ckpt"), model=models.model_for(cfg.model, info, normalized=True),
                         config=cfg, model_info=info, metrics={})
        predictor = Predictor.load(str(tmp_path / "ckpt"))
        assert predictor.info["input"]["text_parts"] == ["title", "note"]
        # rows by column name, each text under its own column: the features training read
        rows = datafiles.read_rows(str(tmp_path / "rows.csv"))
        x = predictor.validate(rows)
        assert np.array_equal(x, data.load_arrays(cfg.data, 0, known=info).x)
        if not beside:  # a model of text alone takes the one text as a string too
            assert np.array_equal(predictor.validate([join(["Late", "fine"])]), x[:1])
        for bad, words in [([{"title": "Late", "stars": 1}], "instance 0: missing columns ['note']; the model reads "
                                                             "the text of ['title', 'note']"),
                           ([{"title": 3, "note": "x", "stars": 1}], "instance 0: 'title' takes text, got 3")]:
            with pytest.raises(RequestError) as e:
                predictor.validate(bad)
            assert e.value.status == 422 and words in e.value.message, e.value.message
        assert_evaluate_and_predict_read_the_file_alike(predictor, x, tmp_path, capsys)


def test_a_model_without_columns_says_to_send_lists(predictor):
    with pytest.raises(RequestError) as e:
        predictor.validate([{"a": 1}])
    assert e.value.code == "wrong_type" and "nested list of shape [2, 3]" in e.value.message


def test_the_predict_command_reads_a_table_file_by_its_header(tmp_path, capsys):
    import socket

    import pandas as pd

    from orchestrator.cli import main

    ckpt = write_table_model(tmp_path / "ckpt", ["width", "area", "mass"], [3])
    # as a spreadsheet exports it: a byte-order mark, CRLF line ends
    (tmp_path / "rows.csv").write_bytes(b"\xef\xbb\xbfmass,kind,width,area\r\n3,a,1,2\r\n6.5,b,4,5\r\n")
    (tmp_path / "rows.json").write_text(json.dumps([[1, 2, 3], [4, 5, 6.5]]))
    assert main(["predict", ckpt, "--input", str(tmp_path / "rows.csv"), "--json"]) == 0
    by_name = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["predict", ckpt, "--input", str(tmp_path / "rows.json"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == by_name
    # pandas' to_csv() writes the frame's index first, unnamed: not a column of any model (tablefiles.index_columns)
    (tmp_path / "indexed.csv").write_text(",mass,kind,width,area\n0,3,a,1,2\n1,6.5,b,4,5\n")
    assert main(["predict", ckpt, "--input", str(tmp_path / "indexed.csv"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == by_name
    # any table that training reads: TSV, Parquet, JSON Lines, ..., compressed or not
    frame = pd.read_csv(tmp_path / "rows.csv")
    frame.to_csv(tmp_path / "rows.tsv.gz", sep="\t", index=False)
    frame.to_parquet(tmp_path / "rows.parquet")
    frame.to_json(tmp_path / "rows.jsonl", orient="records", lines=True)
    for name in ["rows.tsv.gz", "rows.parquet", "rows.jsonl"]:
        assert main(["predict", ckpt, "--input", str(tmp_path / name), "--json"]) == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == by_name, name
    for text, words in [("mass,kind,width,area\n3,a,1,2\n3,a,,2\n", "instance 1: 'width' takes a number, got null"),
                        ("mass,kind,width,area\n3,a,1,2,9\n", "Expected 4 columns, got 5"),
                        ("mass,width,aera\n3,1,2\n", "missing columns ['area'], unknown columns ['aera']")]:
        (tmp_path / "bad.csv").write_text(text)
        assert main(["predict", ckpt, "--input", str(tmp_path / "bad.csv")]) == 2
        assert words in capsys.readouterr().err
    # a column the model does not take (a date here: as JSON text, not a crash) is left, as training left it
    frame.assign(when=pd.Timestamp("2026-01-01")).to_parquet(tmp_path / "dated.parquet")
    assert main(["predict", ckpt, "--input", str(tmp_path / "dated.parquet"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == by_name
    assert main(["predict", ckpt, "--input", str(tmp_path / "absent.csv")]) == 2
    assert "--input " + str(tmp_path / "absent.csv") + ": no such file" in capsys.readouterr().err
    with socket.socket() as closed:  # a URL whose server does not answer says so, not "no such file"
        closed.bind(("127.0.0.1", 0))
        refused = f"http://127.0.0.1:{closed.getsockname()[1]}/rows.csv"
        assert main(["predict", ckpt, "--input", refused]) == 2
        assert f"--input {refused}: the server did not answer (Connection refused)" in capsys.readouterr().err
    # an Excel workbook's first sheet, as the same rows in a CSV; an old .xls workbook is refused with what to do
    frame.to_excel(tmp_path / "rows.xlsx", index=False)
    assert main(["predict", ckpt, "--input", str(tmp_path / "rows.xlsx"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == by_name
    (tmp_path / "rows.xls").write_bytes(b"\xd0\xcf\x11\xe0")
    assert main(["predict", ckpt, "--input", str(tmp_path / "rows.xls")]) == 2
    assert "is a spreadsheet workbook in a format not read here: save it as an Excel workbook (.xlsx) or its sheet " \
           "as CSV" in capsys.readouterr().err


def test_the_predict_command_writes_each_input_with_its_prediction_to_a_table_file(tmp_path, capsys):
    import pandas as pd

    from orchestrator.cli import main

    ckpt = write_table_model(tmp_path / "ckpt", ["width", "area", "mass"], [3])
    (tmp_path / "rows.csv").write_text("id,mass,kind,width,area\nr1,3,a,1,2\nr2,6.5,b,4,5\nr3,1,,0,0\n")
    assert main(["predict", ckpt, "--input", str(tmp_path / "rows.csv"), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for name, read in [("scored.csv", pd.read_csv), ("scored.parquet", pd.read_parquet),
                       ("scored.jsonl.gz", lambda p: pd.read_json(p, lines=True)), ("scored.json", pd.read_json),
                       ("scored.xlsx", pd.read_excel)]:
        assert main(["predict", ckpt, "--input", str(tmp_path / "rows.csv"), "--output", str(tmp_path / name)]) == 0
        assert f"wrote 3 predictions to {tmp_path / name}" in capsys.readouterr().out
        scored = read(tmp_path / name)
        classes = [f"probability_{label}" for label in answer["labels"]]
        assert list(scored.columns) == ["id", "mass", "kind", "width", "area", "prediction", "probability", *classes]
        assert scored["id"].tolist() == ["r1", "r2", "r3"] and scored["mass"].tolist() == [3, 6.5, 1]  # the rows
        assert scored["prediction"].tolist() == [p["label"] for p in answer["predictions"]], name
        np.testing.assert_allclose(scored[classes], [p["probabilities"] for p in answer["predictions"]], atol=1e-6)
        np.testing.assert_allclose(scored["probability"], scored[classes].max(axis=1))
    # a date column goes to the model as text, and comes out a date again
    (tmp_path / "dated.csv").write_text("id,mass,width,area,when\nr1,3,1,2,2026-01-05\nr2,6.5,4,5,\n")
    for name, read in [("dated.parquet", pd.read_parquet), ("dated.xlsx", pd.read_excel)]:
        assert main(["predict", ckpt, "--input", str(tmp_path / "dated.csv"), "--output", str(tmp_path / name)]) == 0
        when = read(tmp_path / name)["when"]
        assert when.dtype.kind == "M" and when[0] == pd.Timestamp("2026-01-05") and pd.isna(when[1]), name
    capsys.readouterr()
    # --columns: the output's columns, in order; the training's label column (kind), which rows to predict lack,
    # names the prediction, as a Kaggle submission has it (id, kind)
    pd.read_csv(tmp_path / "rows.csv").drop(columns="kind").to_csv(tmp_path / "test.csv", index=False)
    assert main(["predict", ckpt, "--input", str(tmp_path / "test.csv"), "--output", str(tmp_path / "sub.csv"),
                 "--columns", "id, kind,probability"]) == 0
    submission = pd.read_csv(tmp_path / "sub.csv")
    assert list(submission.columns) == ["id", "kind", "probability"] and submission["id"].tolist() == ["r1", "r2", "r3"]
    assert submission["kind"].tolist() == [p["label"] for p in answer["predictions"]]
    for argv, words in [(["--output", str(tmp_path / "o.csv"), "--columns", "id,knd"], "--columns ['knd'] are not "
                         "among the output's columns: ['id', 'mass', 'width', 'area', 'prediction', "),
                        (["--columns", "id"], "--columns chooses the columns of the --output file: give --output too")]:
        assert main(["predict", ckpt, "--input", str(tmp_path / "test.csv"), *argv]) == 2
        assert words in capsys.readouterr().err
    # texts and JSON inputs: each in a column of its own
    (tmp_path / "rows.json").write_text(json.dumps([[1, 2, 3]]))
    assert main(["predict", ckpt, "--input", str(tmp_path / "rows.json"), "--output", str(tmp_path / "l.jsonl")]) == 0
    assert json.loads((tmp_path / "l.jsonl").read_text())["input"] == [1, 2, 3]
    # what it cannot write is said before predicting, and the input file is never written over
    before = (tmp_path / "rows.csv").read_text()
    (tmp_path / "clash.csv").write_text("mass,width,area,prediction\n3,1,2,x\n")
    for output, source, words in [
        (tmp_path / "rows.csv", "rows.csv", "is the --input file: name another, to keep the inputs"),
        (tmp_path / "out.xls", "rows.csv", "name the file by the table format to write: .csv, .tsv"),
        (tmp_path / "none" / "out.csv", "rows.csv", "no such directory"),
        ("ftp://host/out.csv", "rows.csv", "write to a local path, s3://bucket/key or gs://bucket/key"),
        (tmp_path / "out.csv", "clash.csv", "--input has columns ['prediction'], which --output would write"),
    ]:
        assert main(["predict", ckpt, "--input", str(tmp_path / source), "--output", str(output)]) == 2
        assert words in capsys.readouterr().err
    assert (tmp_path / "rows.csv").read_text() == before and not (tmp_path / "out.csv").exists()


def test_the_predict_command_reads_its_inputs_from_s3_and_writes_the_predictions_there(tmp_path, capsys, s3_bucket):
    """Batch scoring where the data lives: --input and --output as s3:// URIs (moto's S3 server on loopback)."""
    import io

    import boto3
    import pandas as pd

    from orchestrator.cli import main

    s3 = boto3.client("s3")
    ckpt = write_table_model(tmp_path / "ckpt", ["width", "area", "mass"], [3])
    rows = "id,mass,kind,width,area\nr1,3,a,1,2\nr2,6.5,b,4,5\nr3,1,,0,0\n"
    (tmp_path / "rows.csv").write_text(rows)
    s3.put_object(Bucket=s3_bucket, Key="in/rows.csv", Body=rows.encode())
    s3.put_object(Bucket=s3_bucket, Key="in/rows.json", Body=json.dumps({"instances": [[1, 2, 3]]}).encode())
    capsys.readouterr()
    for name in ["scored.parquet", "scored.csv.gz"]:
        uri = f"s3://{s3_bucket}/out/{name}"
        assert main(["predict", ckpt, "--input", f"s3://{s3_bucket}/in/rows.csv", "--output", uri]) == 0
        assert f"wrote 3 predictions to {uri}" in capsys.readouterr().out
        assert main(["predict", ckpt, "--input", str(tmp_path / "rows.csv"), "--output", str(tmp_path / name)]) == 0
        read = pd.read_parquet if name.endswith("parquet") else lambda f: pd.read_csv(f, compression="gzip")
        body = s3.get_object(Bucket=s3_bucket, Key=f"out/{name}")["Body"].read()
        pd.testing.assert_frame_equal(read(io.BytesIO(body)), read(tmp_path / name))  # as written locally
    assert main(["predict", ckpt, "--input", f"s3://{s3_bucket}/in/rows.json", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["predictions"]) == 1
    # a directory of table files, as Spark and Ray Data write them: every row of every part, in name order
    for part, rows_of in (("part-0.csv", rows.splitlines()[:3]), ("part-1.csv", rows.splitlines()[:1] +
                                                                   rows.splitlines()[3:])):
        s3.put_object(Bucket=s3_bucket, Key=f"parts/{part}", Body="\n".join(rows_of).encode())
    s3.put_object(Bucket=s3_bucket, Key="parts/_SUCCESS", Body=b"")
    uri = f"s3://{s3_bucket}/out/parts.csv"
    assert main(["predict", ckpt, "--input", f"s3://{s3_bucket}/parts", "--output", uri]) == 0
    body = s3.get_object(Bucket=s3_bucket, Key="out/parts.csv")["Body"].read()
    assert pd.read_csv(io.BytesIO(body)).equals(pd.read_csv(tmp_path / "scored.csv.gz", compression="gzip"))
    # said before anything is predicted: an input that is not there, a bucket that is not, the input itself
    for source, output, words in [
        (f"s3://{s3_bucket}/in/absent.csv", None, f"--input s3://{s3_bucket}/in/absent.csv: no such file"),
        (f"s3://{s3_bucket}/in/rows.csv", "s3://no-such-bucket-here/out.csv", "cannot write to storage"),
        (f"s3://{s3_bucket}/in/rows.csv", f"s3://{s3_bucket}/in/rows.csv", "is the --input file: name another"),
    ]:
        assert main(["predict", ckpt, "--input", source, *(["--output", output] if output else [])]) == 2
        assert words in capsys.readouterr().err
    assert s3.get_object(Bucket=s3_bucket, Key="in/rows.csv")["Body"].read() == rows.encode()


def test_the_predict_command_decodes_image_files_to_the_model_input_shape(tmp_path, capsys, s3_bucket):
    from PIL import Image

    from orchestrator.cli import main

    cfg = config_from_dict({"name": "pets", "data": {"name": "digits"}, "model": {"name": "cnn", "channels": [4]}})
    torch.manual_seed(0)
    model = build_model(cfg.model, [3, 6, 5], 2)
    ckpt = str(tmp_path / "ckpt")
    write_checkpoint(ckpt, model=model, config=cfg, metrics={},
                     model_info={**INFO, "input_shape": [3, 6, 5], "label_names": ["cat", "dog"]})
    rng = np.random.default_rng(0)
    (tmp_path / "in").mkdir()
    for name in ["b.png", "a.jpg"]:  # any size and colours: converted to RGB and resized to 5 x 6, as in training
        Image.fromarray(rng.integers(0, 256, (12, 10)).astype(np.uint8)).save(tmp_path / "in" / name)
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    assert main(["predict", ckpt, "--input", str(tmp_path / "in"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["inputs"] == [str(tmp_path / "in" / "a.jpg"), str(tmp_path / "in" / "b.png")]
    expected = [np.asarray(Image.open(tmp_path / "in" / n).convert("RGB").resize((5, 6)), np.float32).transpose(2, 0, 1)
                for n in ["a.jpg", "b.png"]]
    probs = torch.softmax(model.eval()(torch.tensor(np.stack(expected))), 1)
    np.testing.assert_allclose([p["probabilities"] for p in out["predictions"]], probs.tolist(), atol=1e-5)
    import boto3  # a folder of images on S3: the same predictions, each named by its URI

    for name in ["a.jpg", "b.png", "notes.txt"]:
        boto3.client("s3").upload_file(str(tmp_path / "in" / name), s3_bucket, f"in/{name}")
    assert main(["predict", ckpt, "--input", f"s3://{s3_bucket}/in", "--json"]) == 0
    on_s3 = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert on_s3["inputs"] == [f"s3://{s3_bucket}/in/a.jpg", f"s3://{s3_bucket}/in/b.png"]
    assert on_s3["predictions"] == out["predictions"]
    assert main(["predict", ckpt, "--input", str(tmp_path / "in" / "b.png")]) == 0
    assert capsys.readouterr().out.startswith(str(tmp_path / "in" / "b.png") + "\t" + out["predictions"][1]["label"])
    (tmp_path / "bad.png").write_bytes(b"not a png")
    assert main(["predict", ckpt, "--input", str(tmp_path / "bad.png")]) == 2
    assert "bad.png: not an image file of a kind Pillow reads (PNG, JPEG" in capsys.readouterr().err
    assert main(["predict", ckpt, "--input", str(tmp_path / "absent.png")]) == 2
    assert f"--input {tmp_path / 'absent.png'}: no such file" in capsys.readouterr().err
    table = write_table_model(tmp_path / "table", ["width", "area"], [2])
    assert main(["predict", table, "--input", str(tmp_path / "in")]) == 2
    assert "this model takes inputs of shape [2], not images" in capsys.readouterr().err


def test_the_predict_command_reads_a_parquet_column_of_image_files_as_training_did(tmp_path, capsys):
    """Hugging Face datasets' Parquet: an `image` column of {"bytes", "path"} structs beside the label."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from orchestrator.cli import main
    from tests.conftest import png_bytes

    cfg = config_from_dict({"name": "hf", "data": {"name": "files", "path": "hf", "feature_shape": [1, 6, 5]},
                            "model": {"name": "cnn", "channels": [4]}})
    torch.manual_seed(0)
    model = build_model(cfg.model, [1, 6, 5], 2)
    ckpt = str(tmp_path / "ckpt")
    write_checkpoint(ckpt, model=model, config=cfg, metrics={}, model_info={
        **INFO, "input_shape": [1, 6, 5], "label_names": ["cat", "dog"], "feature_columns": ["image"]})
    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, (12, 10)).astype(np.uint8) for _ in range(3)]
    files = [{"bytes": png_bytes(image), "path": None} for image in pixels]
    images = pa.array(files, pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    pq.write_table(pa.table({"id": [7, 8, 9], "image": images}), tmp_path / "test.parquet")
    assert main(["predict", ckpt, "--input", str(tmp_path / "test.parquet"), "--output", str(tmp_path / "o.csv")]) == 0
    expected = np.stack([np.asarray(Image.fromarray(i).resize((5, 6)), np.float32)[None] for i in pixels])
    probs = torch.softmax(model.eval()(torch.tensor(expected)), 1).detach().numpy()
    scored = pd.read_csv(tmp_path / "o.csv")
    assert list(scored.columns[:3]) == ["id", "prediction", "probability"]  # the image bytes are not written back
    np.testing.assert_allclose(scored[["probability_cat", "probability_dog"]].to_numpy(), probs, atol=1e-5)


def test_images_in_a_request_are_base64_files_decoded_as_in_training(tmp_path):
    import base64
    import io

    from PIL import Image

    model = Predictor.load(write_image_model(tmp_path / "ckpt"))

    def b64(size, fmt="PNG", color=(200, 10, 10)):
        out = io.BytesIO()
        Image.new("RGB", size, color).save(out, fmt)
        return {"b64": base64.b64encode(out.getvalue()).decode()}

    x = model.validate([b64((4, 4)), b64((9, 7), "JPEG")])  # any size and colours: to grayscale 4 x 4
    gray = np.asarray(Image.new("RGB", (1, 1), (200, 10, 10)).convert("L"))[0, 0]
    assert x.shape == (2, 1, 4, 4) and np.allclose(x, gray, atol=3)
    for instances, code, words in [
        ([{"b64": "not base64!"}], "invalid_image", "instance 0: b64 is not base64"),
        ([{"b64": base64.b64encode(b"GIF89a...").decode()}], "invalid_image", "instance 0: not an image file of a "
                                                                                 "kind Pillow"),
        ([b64((4, 4)), b64((5000, 4000))], "invalid_image", "instance 1 is 5000x4000 pixels, more than 16,777,216"),
        ([b64((4, 4)), [[[0] * 4] * 4]], "wrong_type", 'instance 1: send every instance as {"b64"'),
        ([{"b64": "", "x": 1}], "wrong_type", 'instance 0: send every instance as {"b64"'),
    ]:
        with pytest.raises(RequestError) as e:
            model.validate(instances)
        assert (e.value.status, e.value.code) == (422, code) and words in e.value.message, e.value.message
    with pytest.raises(RequestError, match=r"this model takes inputs of shape \[2, 3\], not images"):
        Predictor.load(write(tmp_path / "vectors")).validate([b64((4, 4))])


def test_images_channels_last_are_taken_as_training_read_them(tmp_path):
    """A model of [3, 8, 8] images, trained on arrays of [8, 8, 3] (as PIL, Keras and Ray Data hold them), takes
    an image either way; a shape that is neither is refused."""
    cfg = config_from_dict({"name": "rgb", "data": {"name": "digits"}, "model": {"name": "cnn", "channels": [4]}})
    write_checkpoint(str(tmp_path / "ckpt"), model=build_model(cfg.model, [3, 8, 8], 2), config=cfg, metrics={},
                     model_info={**INFO, "input_shape": [3, 8, 8], "label_names": ["cat", "dog"]})
    model = Predictor.load(str(tmp_path / "ckpt"))
    chw = np.random.default_rng(0).normal(size=(2, 3, 8, 8)).round(3)
    assert np.array_equal(model.validate(chw.transpose(0, 2, 3, 1).tolist()), model.validate(chw.tolist()))
    with pytest.raises(RequestError, match=r"each instance must have shape \[3, 8, 8\] \(or be a flat list of 192 "
                                           r"numbers\), got \[8, 3, 8\]"):
        model.validate(chw.transpose(0, 2, 1, 3).tolist())
    # rows of a table whose column holds each image (Ray Data's Parquet), as `predict --input` sends them: reshaping
    # the [8, 8, 3] rows to [3, 8, 8] had scrambled them
    write_checkpoint(str(tmp_path / "column"), model=build_model(cfg.model, [3, 8, 8], 2), config=cfg, metrics={},
                     model_info={**INFO, "input_shape": [3, 8, 8], "label_names": ["cat", "dog"],
                                 "feature_columns": ["image"]})
    rows = [{"image": image, "label": "cat"} for image in chw.transpose(0, 2, 3, 1).tolist()]
    assert np.array_equal(Predictor.load(str(tmp_path / "column")).validate(rows), model.validate(chw.tolist()))


def test_a_model_of_a_table_naming_image_files_scores_a_test_folder_by_its_ids(tmp_path, capsys):
    """Kaggle's layout: trained on train.csv's ids with data.image_dir train, `predict --input sample_submission.csv
    --image-dir test` scores the test folder's images by the ids the file lists; `evaluate --data` reads a labelled
    table so too."""
    from PIL import Image

    from orchestrator.cli import main
    from orchestrator.evaluate import evaluate_on_data

    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 4)):
        (tmp_path / split).mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8)).save(tmp_path / split / f"{split}{i}.png")
        pd.DataFrame({"id": [f"{split}{i}" for i in range(n)], "kind": ["a", "b"] * (n // 2)}).to_csv(
            tmp_path / f"{split}.csv", index=False)
    cfg = config_from_dict({**TABLE, "model": {"name": "cnn", "channels": [4], "hidden_size": 8},
                            "data": {**TABLE["data"], "path": str(tmp_path / "train.csv"), "image_dir": "train"}})
    predictor, _ = write_model_of(cfg, tmp_path / "ckpt")
    images = [np.asarray(Image.open(tmp_path / "test" / f"test{i}.png")).transpose(2, 0, 1).tolist() for i in range(4)]
    expected = [predictor.labels[i] for i in predictor.predict(predictor.validate(images)).argmax(1)]
    ckpt, test = str(tmp_path / "ckpt"), str(tmp_path / "test.csv")
    assert main(["predict", ckpt, "--input", test, "--image-dir", "test", "--json"]) == 0
    assert [p["label"] for p in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["predictions"]] == expected
    assert main(["predict", ckpt, "--input", test]) == 2  # training's folder, train/: not where these ids are
    assert "no column names the image files under " in (err := capsys.readouterr().err) and "'id': ['test0', " \
        "'test1']. Is it their folder (data.image_dir; for new rows, --image-dir)?" in err
    assert evaluate_on_data(ckpt, test, image_dir="test")["num_rows"] == 4


def test_predict_input_reads_an_npz_of_arrays_as_training_does(tmp_path, capsys):
    """A model trained on an NPZ's x and y (or Keras' x_train, x_test) scores an NPZ of inputs: before, `predict
    --input test.npz` read it as UTF-8 text ("cannot read --input ...: 'utf-8' codec can't decode")."""
    import gzip

    from orchestrator.cli import main

    write_checkpoint(str(tmp_path / "ckpt"), model=build_model(CFG.model, [2, 3], 3), config=CFG, metrics={},
                     model_info={**INFO, "feature_columns": ["x"]})
    model = Predictor.load(str(tmp_path / "ckpt"))
    x = np.random.default_rng(0).normal(size=(5, 2, 3)).astype(np.float32)
    expected = [model.labels[i] for i in model.predict(model.validate(x.tolist())).argmax(1)]
    np.savez(tmp_path / "test.npz", x_test=x, y_test=np.arange(5) % 3)  # one split: x and y
    np.savez(tmp_path / "plain.npz", x=x)
    for name in ("test.npz", "plain.npz"):
        assert main(["predict", str(tmp_path / "ckpt"), "--input", str(tmp_path / name), "--json"]) == 0
        answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert [p["label"] for p in answer["predictions"]] == expected, name
    # MNIST's IDX files: a model trained on them (its input `image`) scores the t10k images file, gzipped
    write_checkpoint(str(tmp_path / "idx"), model=build_model(CFG.model, [2, 3], 3), config=CFG, metrics={},
                     model_info={**INFO, "feature_columns": ["image"]})
    pixels = np.random.default_rng(1).integers(0, 256, (5, 2, 3), dtype=np.uint8)
    header = bytes([0, 0, 0x08, 3]) + np.array(pixels.shape, ">u4").tobytes()
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + pixels.tobytes()))
    model = Predictor.load(str(tmp_path / "idx"))
    expected = [model.labels[i] for i in model.predict(model.validate(pixels.tolist())).argmax(1)]
    assert main(["predict", str(tmp_path / "idx"), "--input", str(tmp_path / "t10k-images-idx3-ubyte.gz"),
                 "--json"]) == 0
    assert [p["label"] for p in json.loads(capsys.readouterr().out.strip().splitlines()[-1])["predictions"]] == expected
    np.savez(tmp_path / "ragged.npz", x=x, y=np.arange(4))
    assert main(["predict", str(tmp_path / "ckpt"), "--input", str(tmp_path / "ragged.npz")]) == 2
    assert "holds arrays of different lengths (x 5, y 4): one row of each per input" in capsys.readouterr().err


def test_a_model_of_a_file_without_a_header_reads_new_rows_as_its_training_did(tmp_path, capsys):
    """Trained on iris.data (data.format: csv, data.column_names), `predict --input new.data` had been read as
    JSON and `evaluate --data iris.data` refused ("cannot tell the format"): both read such files as training did,
    the rows to predict without the label's column."""
    from orchestrator.cli import main
    from orchestrator.evaluate import evaluate_on_data

    cfg = config_from_dict({**TABLE, "data": {"name": "files", "path": "iris.data", "format": "csv",
                                              "column_names": ["width", "area", "mass", "kind"],
                                              "label_column": "kind", "blank_values": ["?"]}})
    torch.manual_seed(0)
    write_checkpoint(str(tmp_path / "ckpt"), model=build_model(cfg.model, [3], 3), config=cfg, metrics={},
                     model_info={**INFO, "input_shape": [3], "feature_columns": ["width", "area", "mass"]})
    model = Predictor.load(str(tmp_path / "ckpt"))
    x = np.random.default_rng(0).normal(size=(6, 3)).round(3)
    probs = model.predict(model.validate(x.tolist()))
    (tmp_path / "new.data").write_text("".join(f"{a},{b},{c}\n" for a, b, c in x))
    assert main(["predict", str(tmp_path / "ckpt"), "--input", str(tmp_path / "new.data"), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    np.testing.assert_allclose([p["probabilities"] for p in answer["predictions"]], probs, atol=1e-6)
    labels = [INFO["label_names"][i] for i in probs.argmax(1)]
    (tmp_path / "holdout.data").write_text("".join(f"{a},{b},{c},{k}\n" for (a, b, c), k in zip(x, labels))
                                           + "1,2,3,?\n")  # not labelled, as training's data.blank_values says
    scored = evaluate_on_data(str(tmp_path / "ckpt"), str(tmp_path / "holdout.data"))
    assert scored["metrics"]["accuracy"] == 1.0 and scored["num_rows"] == 6
    (tmp_path / "two.data").write_text("".join(f"{a},{b},{c}\n" for a, b, c in x[:2]))  # too few rows to tell
    assert main(["predict", str(tmp_path / "ckpt"), "--input", str(tmp_path / "two.data"), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out.strip().splitlines()[-1])["predictions"]) == 2


def request(client_host: str, authorization: str | None = None) -> Request:
    headers = [(b"authorization", authorization.encode())] if authorization else []
    return Request({"type": "http", "method": "POST", "path": "/v1/predict", "headers": headers,
                    "client": (client_host, 5000)})


def test_without_keys_only_loopback_clients_are_answered(monkeypatch):
    monkeypatch.delenv("ORCHESTRATOR_API_KEYS", raising=False)
    keys = ApiKeys(ServeArgs(checkpoint="x"))
    keys.check(request("127.0.0.1"))
    keys.check(request("::1"))
    with pytest.raises(RequestError) as e:
        keys.check(request("10.1.2.3"))
    assert e.value.status == 401 and "ORCHESTRATOR_API_KEYS" in e.value.message
    ApiKeys(ServeArgs(checkpoint="x", auth="none")).check(request("10.1.2.3"))
    with pytest.raises(ConfigError, match="no API keys"):
        ApiKeys(ServeArgs(checkpoint="x", auth="required"))


def test_with_keys_every_client_needs_one(monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_API_KEYS", "k1-secret, k2-secret")
    keys = ApiKeys(ServeArgs(checkpoint="x"))
    assert b"k1-secret" not in repr(vars(keys)).encode()  # digests only
    for host in ("127.0.0.1", "10.1.2.3"):
        keys.check(request(host, "Bearer k2-secret"))
        with pytest.raises(RequestError, match="Authorization") as e:
            keys.check(request(host))
        assert e.value.status == 401
        with pytest.raises(RequestError) as e:
            keys.check(request(host, "Bearer k1-secreT"))
        assert e.value.status == 403


def test_serve_settings_are_validated_with_named_fields():
    with pytest.raises(ConfigError, match="did you mean 'max_replicas'"):
        parse(ServeArgs, {"checkpoint": "x", "autoscaling": {"max_replica": 3}})
    with pytest.raises(ConfigError, match="min_replicas .* exceeds max_replicas"):
        parse(ServeArgs, {"checkpoint": "x", "autoscaling": {"min_replicas": 3, "max_replicas": 2}})
    with pytest.raises(ConfigError, match="max_batch_size"):
        parse(ServeArgs, {"checkpoint": "x", "max_batch_size": 0})


def test_a_broken_model_never_serves_answers_503_and_fails_its_health_check(tmp_path):
    server = Endpoint()  # the replica's class, without Serve
    config = {"args": ServeArgs(checkpoint=write(tmp_path / "ok")).model_dump(mode="json")}
    asyncio.run(server.reconfigure(config))
    server.check_health()
    with pytest.raises(RuntimeError, match="canary"):
        asyncio.run(server.reconfigure({"args": {**config["args"], "checkpoint": write(tmp_path / "nan", broken=True)}}))
    assert server.predictor.version == Predictor.load(str(tmp_path / "ok")).version  # still the good model
    overflow = FloatingPointError("the model's output is not finite")
    answer = asyncio.run(server._not_answered(server.predictor, overflow))
    assert answer.status_code == 422  # the model is fine: the inputs overflowed it
    with torch.no_grad():
        next(server.predictor.model.parameters()).fill_(float("nan"))  # weights corrupted in memory
    with pytest.raises(RuntimeError, match="canary"):
        server.check_health()
    for error in (overflow, RuntimeError("CUDA error")):  # the replica is at fault: the client should retry
        answer = asyncio.run(server._not_answered(server.predictor, error))
        assert answer.status_code == 503 and answer.headers["retry-after"] == str(server.args.retry_after_s)


def test_short_forward_passes_run_on_the_event_loop_and_long_ones_in_a_thread(tmp_path, monkeypatch):
    import threading
    import time

    from orchestrator import endpoint

    server = Endpoint()
    asyncio.run(server.reconfigure({"args": ServeArgs(checkpoint=write(tmp_path / "ckpt")).model_dump(mode="json")}))
    fast = server.inputs_on_loop
    assert fast >= 32  # a 16-unit MLP: far under 2 ms even for a full batch

    async def where(inputs):
        loop_thread = threading.get_ident()
        ran_on = await server._run(lambda x: threading.get_ident(), np.zeros(1), inputs=inputs)
        return "loop" if ran_on == loop_thread else "thread"

    assert asyncio.run(where(1)) == "loop" and asyncio.run(where(fast)) == "loop"
    assert asyncio.run(where(fast + 1)) == "thread"
    assert asyncio.run(where(None)) == "thread"  # a generation: many passes

    slow = Predictor.load(str(tmp_path / "ckpt"))
    slow_pass = slow.predict
    monkeypatch.setattr(slow, "predict", lambda x: (time.sleep(endpoint.ON_LOOP_S), slow_pass(x))[1])
    assert endpoint._inputs_on_loop(slow) == 0  # even one input takes too long: every pass in a thread


def test_binding_beyond_loopback_without_keys_is_refused(tmp_path, monkeypatch):
    from orchestrator.serve import check_deployable

    monkeypatch.delenv("ORCHESTRATOR_API_KEYS", raising=False)
    args = ServeArgs(checkpoint=write(tmp_path / "ckpt"))
    check_deployable(args, "127.0.0.1")
    with pytest.raises(ConfigError, match="--host 0.0.0.0 exposes the endpoint"):
        check_deployable(args, "0.0.0.0")
    monkeypatch.setenv("ORCHESTRATOR_API_KEYS", "k")
    monkeypatch.chdir(tmp_path)
    resolved, _ = check_deployable(args.model_copy(update={"checkpoint": "ckpt"}), "0.0.0.0")
    assert resolved.checkpoint == str((tmp_path / "ckpt").resolve())  # replicas do not share our cwd


def test_the_printed_url_is_one_a_client_can_open():
    from orchestrator.serve import _url_host

    assert [_url_host(h) for h in ("127.0.0.1", "0.0.0.0", "::", "::1", "fd00::5", "10.0.0.5")] == [
        "127.0.0.1", "127.0.0.1", "127.0.0.1", "[::1]", "[fd00::5]", "10.0.0.5"]  # IPv6 in brackets


LM_CFG = config_from_dict({"name": "lm", "data": {"name": "text", "block_size": 16},
                           "model": {"name": "gpt", "n_layer": 1, "n_head": 2, "d_model": 16}})
LM_INFO = {"input_shape": [16], "label_names": [str(b) for b in range(256)], "normalization": {},
           "data_fingerprint": "x"}


def write_lm(path) -> str:
    torch.manual_seed(0)
    model = build_model(LM_CFG.model, LM_INFO["input_shape"], 256)
    write_checkpoint(str(path), model=model, config=LM_CFG, model_info=LM_INFO, metrics={"val_loss": 5.0})
    return str(path)


@pytest.mark.parametrize("payload, code", [
    ({}, "invalid_prompt"),
    ({"prompt": 3}, "invalid_prompt"),
    ({"prompt": "x", "max_new_tokens": 0}, "invalid_max_new_tokens"),
    ({"prompt": "x", "max_new_tokens": 33}, "invalid_max_new_tokens"),
    ({"prompt": "x", "max_new_tokens": True}, "invalid_max_new_tokens"),
    ({"prompt": "x", "temperature": -0.1}, "invalid_temperature"),
    ({"prompt": "x", "top_k": 1.5}, "invalid_top_k"),
    ({"prompt": "x", "seed": -1}, "invalid_seed"),
    ({"prompt": "x", "n": 2}, "unknown_field"),
    ({"prompt": "\ud800"}, "invalid_prompt"),  # a lone surrogate: valid JSON, no UTF-8
])
def test_generate_requests_are_checked_field_by_field(tmp_path, payload, code):
    from orchestrator import predictor

    generator = predictor.load(write_lm(tmp_path / "lm"), max_new_tokens=32)
    with pytest.raises(RequestError) as e:
        generator.validate(payload)
    assert (e.value.status, e.value.code) == (422, code)
    prompt, sampling = generator.validate({"prompt": "é", "max_new_tokens": 5, "seed": 1})
    assert prompt == "é".encode() and sampling.max_new_tokens == 5
    answer = generator.encode((prompt, sampling), generator.generate([(prompt, sampling)])[0])
    assert answer["num_new_tokens"] == 5 and answer["prompt"] == "é" and generator.canary()


def test_the_generate_command_and_its_wrong_model_errors(tmp_path, capsys):
    from orchestrator.cli import main

    lm_ckpt, classifier = write_lm(tmp_path / "lm"), write(tmp_path / "clf")
    assert main(["generate", lm_ckpt, "--prompt", "def ", "--max-new-tokens", "12", "--seed", "0", "--json"]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["generate", lm_ckpt, "--prompt", "def ", "--max-new-tokens", "12", "--seed", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == first and first["num_new_tokens"] == 12
    assert main(["generate", lm_ckpt, "--prompt", "def ", "--max-new-tokens", "12", "--seed", "0"]) == 0
    assert capsys.readouterr().out == first["prompt"] + first["completion"] + "\n"  # shown as it is made
    assert main(["generate", classifier, "--prompt", "x"]) == 2
    assert "use orchestrator predict" in capsys.readouterr().err
    (tmp_path / "in.json").write_text("[[1]]")
    assert main(["predict", lm_ckpt, "--input", str(tmp_path / "in.json")]) == 2
    assert "use orchestrator generate" in capsys.readouterr().err
    assert main(["generate", lm_ckpt, "--prompt", "x", "--temperature", "-1"]) == 2
    assert "--temperature" in capsys.readouterr().err
    assert main(["generate", lm_ckpt, "--prompt", "x", "--max-new-tokens", "0"]) == 2
    assert "--max-new-tokens: max_new_tokens must be an integer of 1 or more" in capsys.readouterr().err  # offline: no cap


def png(size=(4, 4), color=(200, 10, 10), fmt="PNG") -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, fmt)
    return out.getvalue()


def test_bodies_other_than_json_are_read_by_their_content_type_as_the_json_of_the_same_inputs(tmp_path):
    """What clients of other serving tools send as it is: a CSV table (MLflow's text/csv), an image file
    (TorchServe's), a text; each decodes to what the same inputs as JSON decode to. A type the model cannot
    take is a 415 naming those it takes."""
    import base64

    table = Predictor.load(write_table_model(tmp_path / "table", ["width", "area", "mass"], [3]), max_instances=3)
    rows = [{"width": 1.5, "area": 2, "mass": 3}, {"width": 4, "area": None, "mass": 6}]
    as_json = table.decode(json.dumps({"instances": [{**r, "area": r["area"] or 0} for r in rows]}).encode())
    for body, content_type in [
        (b"mass,area,width,id\n3,2,1.5,a\n6,0,4,b\n", "text/csv"),  # any column order, other columns left
        (b"\xef\xbb\xbfwidth , area, mass\r\n1.5,2,3\r\n\r\n4,0,6\r\n", "text/csv; charset=utf-8"),  # Excel's
        (b"width;area;mass\n1,5;2;3\n4;0;6\n", "text/csv"),  # Excel in much of Europe: decimal commas
        (b"1.5,2,3\n4,0,6\n", "text/csv"),  # no header: rows of numbers in the columns' order
    ]:
        assert np.array_equal(table.decode(body, content_type), as_json), body
    assert table.info["input"]["content_types"].keys() == {"application/json", "text/csv", "multipart/form-data"}
    # a body sent without its type (requests' data=, curl -d's form type, curl -T): read by its first bytes
    for unsaid in ("", "application/x-www-form-urlencoded", "application/octet-stream"):
        assert np.array_equal(table.decode(b' {"instances": [[1.5, 2, 3], [4, 0, 6]]}', unsaid), as_json)
    for body, content_type, status, code, words in [
        (b"width,area,mass\n1,2\n", "text/csv", 422, "invalid_csv", "row 2 of the CSV body holds 2 cells, its "
                                                                    "header 3"),
        (b"1,x,3\n", "text/csv", 422, "missing_header", "start it with a header row (width,area,mass)"),
        (b"width,area,mass\n1,,3\n", "text/csv", 422, "wrong_type", "'area' takes a number, got null"),
        (b"width,area,mass\n1,abc,3\n", "text/csv", 422, "wrong_type", "'area' takes a number, got \"abc\""),
        (b"width,area,mass\n" + b"1,2,3\n" * 4, "text/csv", 422, "too_many_instances", "4 instances"),
        (b"\n\n", "text/csv", 422, "no_instances", "holds no rows"),
        (b"width,area,mass\n1,2,\xff\n", "text/csv", 400, "invalid_text", "not utf-8 text"),
        (b"width,area,mass\n1,2,3\n", "text/csv; charset=klingon", 415, "unsupported_charset", "'klingon'"),
        (b"d2lkdGgsYXJlYSxtYXNz", "text/csv; charset=base64", 415, "unsupported_charset", "not a text encoding"),
        (b"a fine film", "text/plain", 415, "unsupported_media_type", "text/csv (a header row naming the model's "
                                                                      "columns, then a row per input); "),
        (png(), "image/png", 415, "unsupported_media_type", "got 'image/png'"),
        (b"1,2,3\n", "", 415, "unsupported_media_type", "got 'none' and a body that is neither a JSON object nor an "
                                                        "image file: name its type in the Content-Type header"),
    ]:
        with pytest.raises(RequestError) as e:
            table.decode(body, content_type)
        assert (e.value.status, e.value.code) == (status, code) and words in e.value.message, e.value.message

    # a model of images: the image file as the body, decoded as its base64 in JSON is
    images = Predictor.load(write_image_model(tmp_path / "img"))
    for raw, content_type in [(png(), "image/png"), (png((9, 7), fmt="JPEG"), "image/jpeg"), (png(), ""),
                              (png((9, 7), fmt="JPEG"), "application/octet-stream"), (png(fmt="WEBP"), "")]:
        b64 = json.dumps({"instances": [{"b64": base64.b64encode(raw).decode()}]}).encode()
        assert np.array_equal(images.decode(raw, content_type), images.decode(b64))
    assert np.array_equal(images.decode(b"0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n", "text/csv"),
                          images.decode(b'{"instances": [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]]}'))
    with pytest.raises(RequestError, match="not an image file") as e:
        images.decode(b"GIF89a...", "image/gif")
    assert (e.value.status, e.value.code) == (422, "invalid_image")

    # a model of text: the text as the body (in its charset), or a CSV of its column; a text of digits stays text
    texts = Predictor.load(write_text_model(tmp_path / "text"))
    assert np.array_equal(texts.decode("déjà vu".encode("latin-1"), "text/plain; charset=latin-1"),
                          texts.validate(["déjà vu"]))
    assert np.array_equal(texts.decode(b"kind,note\nb,a fine film\na,1234\n", "text/csv"),
                          texts.validate(["a fine film", "1234"]))
    assert texts.info["input"]["content_types"].keys() == {"application/json", "text/csv", "text/plain",
                                                           "multipart/form-data"}

    # a language model: the prompt as the body
    from orchestrator import predictor

    generator = predictor.load(write_lm(tmp_path / "lm"))
    assert generator.decode(b"def ", "text/plain") == generator.decode(b'{"prompt": "def "}')
    with pytest.raises(RequestError, match="got 'text/csv'"):
        generator.decode(b"prompt\ndef \n", "text/csv")


def test_a_form_of_files_is_read_part_by_part_as_each_files_own_body(tmp_path):
    """`curl -F file=@cat.jpg -F file=@dog.png` (TorchServe's clients), requests' files=: each part decoded
    by its declared type, else its file name's; the parts' inputs in order; a part's error names it."""
    images = Predictor.load(write_image_model(tmp_path / "img"), max_instances=3)
    cat, dog, pixels = png(color=(200, 10, 10)), png((9, 7), (10, 10, 200), "JPEG"), ",".join(["7"] * 16).encode()
    body, content_type = form(("file", "cat.png", "image/png", cat), ("file", "dog.jpg", None, dog),
                              ("rows", "rows.csv", "application/octet-stream", pixels))
    x = images.decode(body, content_type)
    assert np.array_equal(x, np.concatenate([images.decode(cat, "image/png"), images.decode(dog, "image/jpeg"),
                                             images.decode(pixels, "text/csv")]))
    assert x.shape == (3, 1, 4, 4) and not np.array_equal(x[0], x[1])
    for parts, status, code, words in [
        ([("file", "cat.png", None, cat), ("file", "bad.png", None, b"GIF89a...")], 422, "invalid_image",
         "form part 'bad.png': "),
        ([("file", "weights.bin", None, b"\x00\x01")], 415, "unsupported_media_type",
         "form part 'weights.bin': cannot tell what it holds"),
        ([("file", "photo", None, cat), ("file", "notes", None, b"\x00\x01")], 415, "unsupported_media_type",
         "form part 'notes': cannot tell"),  # the photo without a suffix is read by its bytes, as an image
        ([("file", "a.png", None, cat)] * 4, 422, "too_many_instances", "4 instances in the form's parts"),
        ([("note", None, None, b"a fine film")], 415, "unsupported_media_type", "form part 'note': this model takes"),
    ]:
        with pytest.raises(RequestError) as e:
            images.decode(*form(*parts))
        assert (e.value.status, e.value.code) == (status, code) and words in e.value.message, e.value.message
    with pytest.raises(RequestError) as e:
        images.decode(cat, "multipart/form-data")  # no boundary
    assert (e.value.status, e.value.code) == (400, "invalid_form")

    # a table model: the CSV file as a form's file; a model of text: a field of text
    table = Predictor.load(write_table_model(tmp_path / "table", ["width", "area", "mass"], [3]))
    csv_file = b"width,area,mass\n1,2,3\n4,5,6\n"
    assert np.array_equal(table.decode(*form(("file", "new.csv", "application/octet-stream", csv_file))),
                          table.decode(csv_file, "text/csv"))
    texts = Predictor.load(write_text_model(tmp_path / "text"))
    assert np.array_equal(texts.decode(*form(("note", None, None, "déjà vu".encode()))), texts.validate(["déjà vu"]))


def test_a_method_not_served_names_the_allowed_ones_in_one_order():
    """Starlette lists a route's methods from a set, so two processes may say 'POST, PUT' and 'PUT, POST'."""
    import asyncio

    from starlette.exceptions import HTTPException
    from starlette.requests import Request

    from orchestrator import endpoint
    request = Request({"type": "http", "method": "GET", "path": "/v1/predict", "headers": [], "query_string": b""})
    for allow in ("PUT, POST", "POST, PUT"):
        answer = asyncio.run(endpoint._routing_error(request, HTTPException(405, headers={"allow": allow})))
        assert answer.status_code == 405 and answer.headers["allow"] == "POST, PUT"
        assert json.loads(answer.body)["error"]["message"] == "GET /v1/predict is not served; use POST, PUT (see /docs)"


def serving(checkpoint: str, **args) -> Endpoint:
    """The replica's class, without Serve, configured as Serve configures it; call its methods in one event loop."""
    server = Endpoint()
    asyncio.run(server.reconfigure({"args": ServeArgs(checkpoint=checkpoint, **args).model_dump(mode="json")}))
    return server


def test_a_handles_caller_gets_the_routes_answer_for_inputs_in_python(tmp_path):
    """Serve's model composition: a deployment calls this one's predict_inputs with a list, an array, a DataFrame
    or a body's dict, and gets what POST /v1/predict answers; bad inputs raise the route's RequestError. (Unbatched:
    serve.batch needs a replica; test_serve.py calls a batching one through a real handle.)"""
    columns, rows = ["width", "area", "mass"], [[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]]
    server = serving(write_table_model(tmp_path / "t", columns, [3]), max_batch_size=1)
    model = server.predictor
    expected = model.encode(model.predict(model.decode(json.dumps({"instances": rows}).encode())))
    given = [rows, np.array(rows), pd.DataFrame(rows, columns=columns),
             pd.DataFrame(np.array(rows)[:, ::-1], columns=columns[::-1]),  # by column name, in any order
             {"dataframe_split": {"columns": columns, "data": rows}}, {"instances": rows}]
    bad = [([[1.0, 2.0]], "wrong_shape"), ({"rows": rows}, "missing_instances"), ("1 2 3", "invalid_instances"),
           (np.zeros((0, 3)), "no_instances"), ([[1.0, 2.0, np.inf]], "not_finite")]

    async def calls():
        answers = [await server.predict_inputs(inputs) for inputs in given]
        refused = []
        for inputs, _ in bad:
            with pytest.raises(RequestError) as e:
                await server.predict_inputs(inputs)
            refused.append(e.value.code)
        with pytest.raises(RequestError) as e:
            await server.generate_text("hello")
        return answers, refused, e.value

    answers, refused, wrong_route = asyncio.run(calls())
    assert answers == [expected] * len(given)
    assert refused == [code for _, code in bad]
    assert (wrong_route.status, wrong_route.code) == (404, "wrong_route") and "/v1/predict" in wrong_route.message


def test_a_handles_caller_gets_generate_s_answer_for_a_prompt_or_a_body(tmp_path):
    server = serving(write_lm(tmp_path / "lm"), max_new_tokens=32, max_batch_size=1)
    body = {"prompt": "ab", "max_new_tokens": 6, "temperature": 0}
    item = server.predictor.validate(body)
    expected = server.predictor.encode(item, server.predictor.generate([item])[0])

    async def calls():
        answers = [await server.generate_text(body), (await server.generate_text("ab"))["prompt"]]
        with pytest.raises(RequestError) as e:
            await server.generate_text({"text": "ab"})
        return answers, e.value

    answers, error = asyncio.run(calls())
    assert answers == [expected, "ab"] and error.code == "missing_prompt"


def test_a_request_error_crosses_processes_whole():
    """Ray pickles an exception a replica raises to hand it to the handle's caller."""
    import pickle

    error = pickle.loads(pickle.dumps(RequestError(422, "wrong_shape", "each instance must have shape [3]")))
    assert (type(error), error.status, error.code, error.message) == (
        RequestError, 422, "wrong_shape", "each instance must have shape [3]")


def call(path: str, body: bytes | None = None, content_type: str = "application/json") -> Request:
    """A request from loopback as the replica's routes get it (a GET without a body)."""
    async def receive():
        return {"type": "http.request", "body": body or b"", "more_body": False}
    return Request({"type": "http", "method": "GET" if body is None else "POST", "path": path,
                    "client": ("127.0.0.1", 1), "headers": [(b"content-type", content_type.encode())]}, receive)


def test_kserve_v1_and_tf_serving_clients_get_v1_predicts_answer_at_their_paths(tmp_path):
    server = serving(write(tmp_path / "ckpt"), max_batch_size=1)
    name, version = server.predictor.info["name"], server.predictor.version
    body = json.dumps({"instances": np.ones((2, 2, 3)).tolist()}).encode()

    async def calls():
        answers = [await server.predict(call("/v1/predict", body)),
                   await server.kserve_predict(call(f"/v1/models/{name}:predict", body), name),
                   await server.kserve_predict(call(f"/v1/models/{name}/versions/{version}:predict", body), name,
                                               version),
                   await server.kserve_predict(call("/v1/models/other:predict", body), "other"),
                   await server.kserve_predict(call(f"/v1/models/{name}:predict", b"[1]"), name),
                   await server.kserve_model(call(f"/v1/models/{name}"), name),
                   await server.kserve_model(call("/v1/models/other"), "other")]
        return [(a.status_code, json.loads(a.body)) for a in answers]

    (_, v1), *kserve, (other, missing), (bad, refused), probe, (absent, gone) = asyncio.run(calls())
    assert kserve == [(200, v1)] * 2 and v1["predictions"][0]["label"] in ("a", "b", "c")
    assert other == 404 and missing == {"error": f"there is no model 'other' here: this endpoint serves {name!r}, "
                                                 f"version {version!r}"}  # KServe's and TF Serving's error shape
    assert bad == 400 and "instances" in refused["error"]
    assert probe == (200, {"name": name, "ready": True}) and absent == 404 and "other" in gone["error"]
