"""The Open Inference Protocol (KServe v2, Triton, MLServer) over a Predictor, without Ray."""

import json

import numpy as np
import pytest

from orchestrator import oip
from orchestrator.errors import RequestError
from orchestrator.predictor import Predictor
from tests.unit.test_predictor import write_image_model, write_table_model, write_text_model


def infer(predictor, payload, headers=None):
    return oip.decode(predictor, json.dumps(payload).encode(), headers or {})


@pytest.fixture
def images(tmp_path) -> Predictor:
    return Predictor.load(write_image_model(tmp_path / "img"), max_instances=4)


def test_one_tensor_of_rows_flat_or_nested_answers_as_v1_does(images):
    x = np.arange(32, dtype=np.float32).reshape(2, 1, 4, 4)
    flat = {"id": "r1", "inputs": [{"name": "input", "shape": [2, 1, 4, 4], "datatype": "FP32",
                                    "data": x.ravel().tolist()}]}
    got, meta = infer(images, flat)
    assert np.array_equal(got, x) and meta == {"id": "r1", "outputs": ["probabilities", "label", "class_index"]}
    nested = {"inputs": [{"name": "input", "shape": [2, 16], "datatype": "INT64", "data": x.reshape(2, 16).tolist()}]}
    assert np.array_equal(infer(images, nested)[0], x)  # data nested, shape of flat rows: the same inputs
    probs = images.predict(got)
    answer = oip.encode(images, probs, meta)
    v1 = images.encode(probs)
    assert answer["model_name"] == "pets" and answer["model_version"] == images.version and answer["id"] == "r1"
    out = {o["name"]: o for o in answer["outputs"]}
    assert out["probabilities"]["shape"] == [2, 2] and out["probabilities"]["datatype"] == "FP32"
    np.testing.assert_allclose(np.reshape(out["probabilities"]["data"], (2, 2)),
                               [p["probabilities"] for p in v1["predictions"]], atol=1e-6)
    assert out["label"] == {"name": "label", "datatype": "BYTES", "shape": [2],
                            "data": [p["label"] for p in v1["predictions"]]}
    assert out["class_index"]["data"] == [p["class_index"] for p in v1["predictions"]]
    _, meta = infer(images, {**flat, "outputs": [{"name": "label"}]})  # only what the request asks for
    assert [o["name"] for o in oip.encode(images, probs, {**meta, "id": None})["outputs"]] == ["label"]
    assert "id" not in oip.encode(images, probs, {**meta, "id": None})
    assert oip.metadata(images) == {
        "name": "pets", "versions": [images.version], "platform": "pytorch",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 4, 4]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
                    {"name": "label", "datatype": "BYTES", "shape": [-1]},
                    {"name": "class_index", "datatype": "INT64", "shape": [-1]}]}


def test_a_table_takes_a_tensor_per_column_as_mlservers_pandas_codec_sends_it(tmp_path):
    table = Predictor.load(write_table_model(tmp_path / "table", ["width", "area", "mass"], [3]))
    by_column = {"inputs": [{"name": "mass", "shape": [2], "datatype": "FP64", "data": [3, 6]},
                            {"name": "width", "shape": [2, 1], "datatype": "FP32", "data": [[1.5], [4]]},
                            {"name": "area", "shape": [2], "datatype": "INT32", "data": [2, 5]}]}
    rows = {"inputs": [{"name": "input", "shape": [2, 3], "datatype": "FP32", "data": [1.5, 2, 3, 4, 5, 6]}]}
    expected = table.validate([{"width": 1.5, "area": 2, "mass": 3}, {"width": 4, "area": 5, "mass": 6}])
    assert np.array_equal(infer(table, by_column)[0], expected) and np.array_equal(infer(table, rows)[0], expected)
    assert [i["name"] for i in oip.metadata(table)["inputs"]] == ["width", "area", "mass"]
    short = {"inputs": by_column["inputs"][:2]}
    with pytest.raises(RequestError, match=r"missing columns \['area'\]"):
        infer(table, short)


def test_bad_infer_requests_are_refused_with_what_to_send(images):
    good = {"name": "input", "shape": [1, 16], "datatype": "FP32", "data": [0.0] * 16}
    for payload, headers, status, code, words in [
        ({"instances": [[0] * 16]}, None, 400, "missing_inputs", '{"inputs": [{"name": "input", "shape"'),
        ({"inputs": [{**good, "shape": [1, 15]}]}, None, 422, "wrong_shape", "data holds 16 values, where shape "
                                                                              "[1, 15] holds 15"),
        ({"inputs": [{**good, "datatype": "FLOAT"}]}, None, 400, "invalid_input", "datatype 'FLOAT' is not one"),
        ({"inputs": [{**good, "data": ["a"] * 16}]}, None, 422, "wrong_type", "FP32 data must be numbers"),
        ({"inputs": [{**good, "shape": "1x16"}]}, None, 400, "invalid_input", "shape must be a list of sizes"),
        ({"inputs": [good], "outputs": [{"name": "logits"}]}, None, 400, "unknown_output",
         "['probabilities', 'label', 'class_index']"),
        ({"inputs": [{**good, "shape": [5, 16], "data": [0.0] * 80}]}, None, 422, "too_many_instances", "at most 4"),
        ({"inputs": [good]}, {"inference-header-content-length": "120"}, 415, "binary_data", "binary_data=False"),
        ({"inputs": [good, {**good, "name": "other"}]}, None, 422, "wrong_shape", "a tensor per column"),
    ]:
        with pytest.raises(RequestError) as e:
            infer(images, payload, headers)
        assert (e.value.status, e.value.code) == (status, code) and words in e.value.message, e.value.message
    with pytest.raises(RequestError) as e:
        oip.decode(images, b"{oops", {})
    assert (e.value.status, e.value.code) == (400, "invalid_json")


def test_a_model_of_text_takes_bytes_tensors_of_strings(tmp_path):
    texts = Predictor.load(write_text_model(tmp_path / "text"))
    payload = {"inputs": [{"name": "note", "shape": [2], "datatype": "BYTES", "data": ["a fine film", "dull"]}]}
    assert np.array_equal(infer(texts, payload)[0], texts.validate(["a fine film", "dull"]))
    assert oip.metadata(texts)["inputs"] == [{"name": "note", "datatype": "BYTES", "shape": [-1]}]
    with pytest.raises(RequestError, match="BYTES data must be strings"):
        infer(texts, {"inputs": [{**payload["inputs"][0], "data": [1, 2]}]})
