"""The Open Inference Protocol (KServe's v2, spoken by Triton, MLServer and their clients) over a Predictor.

    POST /v2/models/{name}/infer  {"id": "1", "inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32",
                                                          "data": [0.0, ...]}], "outputs": [{"name": "label"}]}
    -> {"model_name": ..., "model_version": ..., "id": "1", "outputs": [{"name": "label", "shape": [2],
                                                                          "datatype": "BYTES", "data": ["3", "7"]}]}

A request carries its inputs as one tensor, a row of the model's input each ([n, *input shape], row-major), or,
for a model of a table, a tensor per column ([n] each, as MLServer's pandas codec sends a DataFrame); texts and
a table's text cells are BYTES (strings). The answer holds `probabilities` [n, classes], `label` [n] and
`class_index` [n], or those the request's `outputs` name. JSON only: Triton's binary tensor extension is
refused, with what to send. Spec: https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/
"""

from __future__ import annotations

import json
import math

import numpy as np

from orchestrator.errors import RequestError

NUMBERS = {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64"}
EXAMPLE = '{"inputs": [{"name": "input", "shape": [1, ...], "datatype": "FP32", "data": [...]}]}'


def outputs(predictor) -> dict[str, dict]:
    """The tensors an answer can hold, by name: datatype and shape (-1: one per input)."""
    return {"probabilities": {"datatype": "FP32", "shape": [-1, len(predictor.labels)]},
            "label": {"datatype": "BYTES", "shape": [-1]},
            "class_index": {"datatype": "INT64", "shape": [-1]}}


def metadata(predictor) -> dict:
    """GET /v2/models/{name}: the model's inputs as a request sends them, and its outputs."""
    if predictor.columns:  # a tensor per column; the one tensor of whole rows is taken too
        texts = predictor.text_columns()
        joined = predictor.text_column if predictor.text_parts else None  # sent as its parts
        names = [c for c in predictor.columns if c != joined] + list(predictor.text_parts or [])
        inputs = [{"name": c, "datatype": "BYTES" if c in texts else "FP32", "shape": [-1]} for c in names]
    elif predictor.text_column:
        inputs = [{"name": predictor.text_column, "datatype": "BYTES", "shape": [-1]}]
    else:
        inputs = [{"name": "input", "datatype": "FP32", "shape": [-1, *predictor.input_shape]}]
    return {"name": predictor.info["name"], "versions": [predictor.version], "platform": "pytorch",
            "inputs": inputs, "outputs": [{"name": name, **spec} for name, spec in outputs(predictor).items()]}


def decode(predictor, body: bytes, headers) -> tuple[np.ndarray, dict]:
    """An infer request to the model's input array (Predictor.validate) and what its answer needs: the
    request's id and the outputs it asks for."""
    if headers.get("inference-header-content-length"):
        raise RequestError(415, "binary_data", "binary tensor data (Triton's extension) is not read here: send the "
                           "data as JSON (tritonclient: binary_data=False)")
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise RequestError(400, "invalid_json", f"the body is not valid JSON ({str(e)[:120]}): send "
                           f"{EXAMPLE}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list) or not payload["inputs"]:
        raise RequestError(400, "missing_inputs", f"send a JSON object {EXAMPLE}")
    tensors = [_tensor(i, t) for i, t in enumerate(payload["inputs"])]
    asked = payload.get("outputs") or []
    known = outputs(predictor)
    if not isinstance(asked, list) or not all(isinstance(o, dict) and o.get("name") in known for o in asked):
        raise RequestError(400, "unknown_output", f"outputs names the tensors to answer with, of {list(known)}: "
                           '[{"name": "label"}]')
    if len(tensors) == 1 and not (predictor.columns and tensors[0][0] in predictor.columns
                                  and len(predictor.columns) > 1):  # whole rows
        _, shape, values = tensors[0]
        width = math.prod(shape[1:])
        instances = values if len(shape) == 1 else [values[r * width:(r + 1) * width] for r in range(shape[0])]
    else:  # a tensor per column
        rows = {shape[0] for _, shape, _ in tensors}
        if len(rows) != 1 or any(len(shape) > 2 or math.prod(shape[1:]) != 1 for _, shape, _ in tensors):
            shapes = {name: shape for name, shape, _ in tensors}
            raise RequestError(422, "wrong_shape", f"inputs as a tensor per column need shape [n] (or [n, 1]) each, "
                               f"n the same for all; got {shapes}")
        instances = [dict(zip([t[0] for t in tensors], row, strict=True)) for row in zip(*[t[2] for t in tensors])]
    x = predictor.validate(instances)
    return x, {"id": payload.get("id"), "outputs": [o["name"] for o in asked] or list(known)}


def _tensor(i: int, tensor) -> tuple[str, list[int], list]:
    """(name, shape, its values flat in row-major order) of a request's input tensor, checked."""
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise RequestError(400, "invalid_input", f"inputs[{i}] must be an object with name, shape, datatype and "
                           f"data: {EXAMPLE}")
    name, shape, datatype, data = (tensor.get(k) for k in ("name", "shape", "datatype", "data"))
    if not isinstance(shape, list) or not shape or not all(type(d) is int and d >= 0 for d in shape):
        raise RequestError(400, "invalid_input", f"input {name!r}: shape must be a list of sizes, [rows, ...]")
    if datatype not in NUMBERS | {"BYTES"}:
        raise RequestError(400, "invalid_input", f"input {name!r}: datatype {datatype!r} is not one of the protocol's "
                           f"({', '.join(sorted(NUMBERS))}, BYTES)")
    values = _flat(data)
    if values is None or len(values) != math.prod(shape):
        size = "a list" if values is None else f"{len(values)} values"
        raise RequestError(422, "wrong_shape", f"input {name!r}: data holds {size}, where shape {shape} holds "
                           f"{math.prod(shape)}")
    if datatype == "BYTES" and not all(isinstance(v, str) or v is None for v in values):
        raise RequestError(422, "wrong_type", f"input {name!r}: BYTES data must be strings (UTF-8)")
    if datatype in NUMBERS and not all(v is None or type(v) in (int, float, bool) for v in values):
        raise RequestError(422, "wrong_type", f"input {name!r}: {datatype} data must be numbers")
    return name, shape, values


def _flat(data) -> list | None:
    """Nested lists' values in row-major order (the protocol takes data flat or nested); None: not a list."""
    if not isinstance(data, list):
        return None
    out, stack = [], [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            out.append(value)
        else:
            stack.pop()
    return out


def encode(predictor, probs: np.ndarray, meta: dict) -> dict:
    best = probs.argmax(axis=1)
    data = {"probabilities": probs.astype(np.float32).ravel().tolist(), "label": [predictor.labels[i] for i in best],
            "class_index": best.tolist()}
    known = outputs(predictor)
    answer = {"model_name": predictor.info["name"], "model_version": predictor.version}
    if meta["id"] is not None:
        answer["id"] = meta["id"]
    answer["outputs"] = [{"name": name, "datatype": known[name]["datatype"],
                          "shape": [len(probs), *known[name]["shape"][1:]], "data": data[name]}
                         for name in meta["outputs"]]
    return answer
