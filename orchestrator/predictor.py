"""A checkpoint as a predictor: load, decode/validate, predict, encode. No Ray here.

The Serve endpoint (serve.py) and offline `orchestrator predict CHECKPOINT` run this same
code, so the endpoint answers exactly as offline prediction does.

    predictor = Predictor.load("runs/digits-cnn-.../epoch-0025")
    x = predictor.decode(b'{"instances": [[[0, 1, ...], ...]]}')   # RequestError if bad
    predictor.encode(predictor.predict(x))
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import torch

from orchestrator.checkpoint import Checkpoint, read_checkpoint


class RequestError(Exception):
    """A request the client must change: an HTTP 4xx with a JSON body that says what was wrong."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict:
        return {"error": {"code": self.code, "message": self.message}}


class Predictor:
    def __init__(self, ckpt: Checkpoint, max_instances: int = 256):
        self.model = ckpt.model()
        info = ckpt.model_info
        self.input_shape = tuple(info["input_shape"])
        self.labels = list(info["label_names"])
        self.max_instances = max_instances
        weights = ckpt.files["model.safetensors"]
        self.version = hashlib.sha256(weights).hexdigest()[:12]  # names the weights, wherever they are stored
        self.info = {
            "name": ckpt.config.name,
            "version": self.version,
            "checkpoint": ckpt.uri,
            "family": info.get("family", ckpt.config.model.name),
            "input": {"shape": list(self.input_shape), "dtype": info.get("input_dtype", "float32"),
                      "max_instances": max_instances},
            "labels": self.labels,
            "metrics": ckpt.metrics,
            "data_fingerprint": info.get("data_fingerprint"),
            "lineage": ckpt.lineage(),
            "config": ckpt.config.model_dump(mode="json"),
        }

    @classmethod
    def load(cls, uri: str, endpoint_url: str | None = None, max_instances: int = 256) -> Predictor:
        """Read and verify the checkpoint (manifest, safetensors: nothing is unpickled)."""
        return cls(read_checkpoint(uri, endpoint_url), max_instances)

    # ---- decode / validate -------------------------------------------------------------

    def decode(self, body: bytes) -> np.ndarray:
        """A JSON request body to a float32 array of shape (n, *input_shape)."""
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise RequestError(400, "invalid_json", f"the body is not valid JSON ({e})") from None
        if not isinstance(payload, dict) or "instances" not in payload:
            raise RequestError(400, "missing_instances", 'send a JSON object {"instances": [input, ...]}')
        return self.validate(payload["instances"])

    def validate(self, instances) -> np.ndarray:
        shape = list(self.input_shape)
        if not isinstance(instances, list):
            raise RequestError(422, "invalid_instances", f"instances must be a list of inputs of shape {shape}")
        if not instances:
            raise RequestError(422, "no_instances", "instances is empty: send at least one input")
        if len(instances) > self.max_instances:
            raise RequestError(422, "too_many_instances",
                               f"{len(instances)} instances in one request; at most {self.max_instances}: "
                               "split the request")
        try:
            x = np.asarray(instances)
        except ValueError:  # ragged nesting
            raise RequestError(422, "wrong_shape", f"each instance must be a nested list of shape {shape}") from None
        if x.dtype == object:  # null, objects, integers beyond 64 bits
            raise RequestError(422, "wrong_type", f"instances must hold only numbers, in nested lists of shape {shape}")
        if x.dtype.kind not in "iuf":  # strings, booleans
            raise RequestError(422, "wrong_type", f"instances must hold numbers, got {_kind(x.dtype)}")
        if list(x.shape[1:]) != shape:
            raise RequestError(422, "wrong_shape", f"each instance must have shape {shape}, got {list(x.shape[1:])}")
        with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused below
            x = x.astype(np.float32)
        if not np.isfinite(x).all():  # NaN, Infinity, or beyond float32's range
            bad = int(np.argwhere(~np.isfinite(x).reshape(len(x), -1).all(axis=1))[0][0])
            raise RequestError(422, "not_finite", f"instance {bad} holds NaN, Infinity or a number beyond float32")
        return x

    # ---- predict / encode --------------------------------------------------------------

    @torch.inference_mode()
    def predict(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (n, num_classes)."""
        return torch.softmax(self.model(torch.from_numpy(x)), dim=-1).numpy()

    def encode(self, probs: np.ndarray) -> dict:
        best = probs.argmax(axis=1)
        return {
            "predictions": [
                {"label": self.labels[i], "class_index": int(i), "probabilities": p.tolist()}
                for i, p in zip(best, probs)
            ],
            "labels": self.labels,
            "model": {"name": self.info["name"], "version": self.version},
        }

    def canary(self) -> bool:
        """A prediction on a zero input comes out as a probability distribution."""
        probs = self.predict(np.zeros((1, *self.input_shape), dtype=np.float32))
        return bool(np.isfinite(probs).all() and math.isclose(float(probs.sum()), 1.0, abs_tol=1e-3))


def _kind(dtype: np.dtype) -> str:
    return {"b": "booleans", "U": "strings", "S": "strings"}.get(dtype.kind, str(dtype))
