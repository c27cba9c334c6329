"""A checkpoint as a predictor: load, decode/validate, predict, encode. No Ray here.

The Serve endpoint (serve.py) and offline `orchestrator predict|generate CHECKPOINT` run this
same code, so the endpoint answers exactly as offline prediction does.

    predictor = Predictor.load("runs/digits-cnn-.../epoch-0025")
    x = predictor.decode(b'{"instances": [[[0, 1, ...], ...]]}')   # RequestError if bad
    x = predictor.decode(b'{"instances": [{"age": 41, "income": 5.2}]}')  # a table's columns, by name
    x = predictor.decode(b'{"instances": ["a fine film"]}')    # a model of text (data.text_column)
    x = predictor.decode(b"age,income\n41,5.2\n", "text/csv")    # other bodies, by Content-Type (media.py)
    predictor.encode(predictor.predict(x))

    generator = load("runs/text-lm-.../epoch-0004")                # a language model: TextGenerator
    generator.encode(generator.generate([generator.decode(b'{"prompt": "def "}')]))
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterator

import numpy as np
import torch

from orchestrator import amounts, byte_text, dates, lm, media
from orchestrator.blanks import table_features
from orchestrator.categories import one_hot
from orchestrator.checkpoint import Checkpoint, read_checkpoint
from orchestrator.errors import RequestError
from orchestrator.images import channels_last, takes_images


def load(uri: str, endpoint_url: str | None = None, max_instances: int = 256, max_new_tokens: int = 512):
    """The checkpoint's predictor: a TextGenerator for a language model, else a Predictor."""
    ckpt = read_checkpoint(uri, endpoint_url)  # manifest verified, safetensors: nothing is unpickled
    if ckpt.config.model.name == "gpt":
        return TextGenerator(ckpt, max_new_tokens)
    return Predictor(ckpt, max_instances)


def _describe(ckpt: Checkpoint, version: str, **extra) -> dict:
    """What GET /v1/model says about the model."""
    return {
        "name": ckpt.config.name,
        "version": version,
        "checkpoint": ckpt.uri,
        "family": ckpt.model_info.get("family", ckpt.config.model.name),
        **extra,
        "metrics": ckpt.metrics,
        "data_fingerprint": ckpt.model_info.get("data_fingerprint"),
        "lineage": ckpt.lineage(),
        "config": ckpt.config.model_dump(mode="json"),
    }


def _json_object(body: bytes, required: str | tuple[str, ...], example: str) -> dict:
    """The body as a JSON object holding `required` (or one of them); 400 with `example` if it is not."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RequestError(400, "invalid_json", f"the body is not valid JSON ({e})") from None
    except RecursionError:  # arrays in arrays beyond the parser's depth: no model input is nested so deep
        raise RequestError(400, "invalid_json", "the body nests arrays or objects too deeply") from None
    return _holding(payload, required, f"a JSON object {example}")


def _holding(payload, required: str | tuple[str, ...], example: str) -> dict:
    """The payload, if it is an object holding `required` (or one of them); 400 with `example` if it is not."""
    keys = (required,) if isinstance(required, str) else required
    if not isinstance(payload, dict) or not any(key in payload for key in keys):
        raise RequestError(400, f"missing_{keys[0]}", f"send {example}")
    return payload


# The bodies /v1/predict takes: rows (TF Serving's and KServe's "instances", MLflow's "inputs" and
# "dataframe_records") or columns (MLflow's "dataframe_split", pandas' to_dict(orient="split"); "inputs" as
# TF Serving's columnar {column: [values]})
BODIES = ("instances", "inputs", "dataframe_records", "dataframe_split")


def _inputs(payload: dict) -> list:
    """The inputs of a request body in one of the BODIES: a list, objects keyed by column name where the
    body gives columns."""
    given = [key for key in BODIES if key in payload]
    if len(given) > 1:
        raise RequestError(400, "several_bodies", f"the body holds {given}: send the inputs once, in one of them")
    key, value = given[0], payload[given[0]]
    if key == "dataframe_split":
        columns, rows = (value.get("columns"), value.get("data")) if isinstance(value, dict) else (None, None)
        if not isinstance(columns, list) or not isinstance(rows, list):
            raise RequestError(422, "invalid_dataframe_split", 'dataframe_split must be {"columns": [...], "data": '
                               '[[...], ...]}, as pandas\' DataFrame.to_dict(orient="split") gives')
        odd = next((i for i, row in enumerate(rows) if not isinstance(row, list) or len(row) != len(columns)), None)
        if odd is not None:
            raise RequestError(422, "invalid_dataframe_split", f"dataframe_split row {odd} does not hold one value "
                               f"for each of the {len(columns)} columns")
        return [dict(zip(columns, row, strict=True)) for row in rows]
    if key == "inputs" and isinstance(value, dict):  # {column: [value per row]}
        lengths = {len(v) if isinstance(v, list) else -1 for v in value.values()}
        if len(lengths) != 1 or -1 in lengths:
            raise RequestError(422, "invalid_inputs", "inputs as an object must hold a list of values for each "
                               'column, all of one length: {"age": [41, 29], "city": ["Oslo", "Rome"]}')
        return [dict(zip(value, row, strict=True)) for row in zip(*value.values(), strict=True)]
    return value


# An image in a request is refused above this size, before it is decoded: a small compressed file can hold
# a huge image (a decompression bomb), and a replica decodes several at once. 4096 x 4096 is 48 MiB in RGB.
MAX_IMAGE_PIXELS = 4096 * 4096


class Predictor:
    """A classifier: POST /v1/predict."""

    route = "/v1/predict"

    def __init__(self, ckpt: Checkpoint, max_instances: int = 256):
        self.model = ckpt.model()
        info = ckpt.model_info
        self.input_shape = tuple(info["input_shape"])
        self.labels = list(info["label_names"])
        self.columns = info.get("feature_columns")  # a table's columns in the order they fill each input
        self.categories = info.get("categories") or {}  # of its text columns, a feature each (categories.py)
        self.text_column = info.get("text_column")  # a column of free text, the whole input (byte_text.py)
        self.text_bytes = info.get("text_bytes")  # or beside a table's columns: its bytes the first features
        self.text_parts = info.get("text_parts")  # the columns joined into that text, where there are several
        self.dates = info.get("dates") or []  # date columns, 7 features each (dates.py)
        self.written_forms = info.get("written_forms") or {}  # columns of text read as dates or numbers: the form
        blanks = info.get("blanks") or {"index": [], "features": [], "fill": [], "columns": []}  # blanks.py
        self.fillable = blanks["index"]  # the features where a blank (null) is filled
        self.fillable_columns = blanks["columns"]  # the columns that training saw blank: they take null
        self.input_dtype = np.dtype(info.get("input_dtype", "float32"))  # int64: the bytes of a text
        # rows read from the training table may still hold their label: that one key is ignored
        self.label_column = getattr(ckpt.config.data, "label_column", None)
        self.max_instances = max_instances
        self.accepts = self._accepts()
        self.version = ckpt.weights_digest()[:12]  # names the weights, wherever they are stored
        self.info = _describe(ckpt, self.version, route=self.route,
                              input={"shape": list(self.input_shape), "dtype": str(self.input_dtype),
                                     "columns": self.columns, "categories": self.categories,
                                     "text_column": self.text_column,
                                     "text_parts": self.text_parts, "dates": self.dates or None,
                                     "written_forms": self.written_forms or None,
                                     # null for these columns is filled: each feature with its value
                                     "blank_columns": blanks["columns"] or None,
                                     "blank_fill": dict(zip(blanks["features"], blanks["fill"], strict=True)) or None,
                                     "max_instances": max_instances, "content_types": self.accepts},
                              labels=self.labels)

    @classmethod
    def load(cls, uri: str, endpoint_url: str | None = None, max_instances: int = 256) -> Predictor:
        """Read and verify the checkpoint (manifest, safetensors: nothing is unpickled)."""
        return cls(read_checkpoint(uri, endpoint_url), max_instances)

    # ---- decode / validate -------------------------------------------------------------

    def _accepts(self) -> dict[str, str]:
        """The request bodies the model takes, by Content-Type: what each holds (GET /v1/model says it)."""
        text = self.text_column and not self.text_bytes
        named = self._names()
        accepts = {media.JSON: '{"instances": [input, ...]}, or the bodies MLflow\'s clients send',
                   media.CSV: ("a header row naming the model's columns, then a row per input" if named else
                               "a row per input, its numbers in order (flat)")}
        if text:
            accepts[media.TEXT] = "the text to classify"
        if takes_images(self.input_shape):
            accepts[media.IMAGE] = "an image file (PNG, JPEG, ...), decoded as training decoded the images"
        accepts[media.FORM] = "files and fields, each of a type above, by its own or its file name's: curl -F file=@..."
        return accepts

    def text_columns(self) -> set[str]:
        """The columns whose values are text (categories, dates, free text); a table's others take numbers."""
        return {*self.categories, *self.dates, *(self.text_parts or []), *([self.text_column] if self.text_column
                                                                           else [])}

    def _names(self) -> list[str]:
        """The columns a row of the model's input is named by: a table's, its text's."""
        return [*(self.columns or []), *(self.text_parts or []), *([self.text_column] if self.text_column else [])]

    def decode(self, body: bytes, content_type: str = media.JSON) -> np.ndarray:
        """A request body to an array of shape (n, *input_shape): float32, or int64 for a model of text. JSON
        (BODIES), or by its Content-Type a CSV table's rows, a text, an image file (self.accepts)."""
        kind, charset = media.media_type(content_type)
        kind = media.sniffed(kind, body)
        media.check(kind, self.accepts)
        if kind == media.JSON:
            return self.validate(_inputs(_json_object(body, BODIES, '{"instances": [input, ...]}')))
        if kind == media.CSV:
            return self.validate(media.csv_rows(media.text_of(body, charset), self._names(), self.text_columns()))
        if kind == media.TEXT:
            return self.validate([media.text_of(body, charset)])
        if kind == media.FORM:
            x = np.concatenate(media.each_part(body, content_type, self.decode))
            if len(x) > self.max_instances:
                raise RequestError(422, "too_many_instances", f"{len(x)} instances in the form's parts; at most "
                                   f"{self.max_instances}: split the request")
            return x
        return self.validate([self._image(body, "the body")])

    def from_python(self, inputs) -> np.ndarray:
        """Inputs handed over in Python, not in a body (a DeploymentHandle's call): a list of them as a body's
        "instances" holds them, a NumPy array of them, a pandas DataFrame of rows, or a dict of one of the BODIES."""
        if isinstance(inputs, dict):
            inputs = _inputs(_holding(inputs, BODIES, f"a list of inputs or a dict of one of {list(BODIES)}"))
        elif isinstance(inputs, np.ndarray):
            inputs = list(inputs)
        elif (pandas := sys.modules.get("pandas")) and isinstance(inputs, pandas.DataFrame):  # rows by column
            inputs = inputs.to_dict(orient="records")
        return self.validate(inputs)

    def validate(self, instances) -> np.ndarray:
        """Inputs as nested lists of the input shape, as flat lists of its size (filled row-major, as
        data.feature_shape fills it in training), or, for a model trained on a table, as objects keyed by
        column name ({"age": 41, ...}), which fill each input in the training column order. A model of text
        takes texts, as strings or keyed by its column ({"review": "..."}); with other columns, its text is one
        of the row's keys. A date column takes ISO 8601 text;
        a table's cell that training saw blank may be null (in a row as a list too): the model fills it."""
        shape = list(self.input_shape)
        if not isinstance(instances, list):
            raise RequestError(422, "invalid_instances", f"instances must be a list of inputs of shape {shape}")
        if not instances:
            raise RequestError(422, "no_instances", "instances is empty: send at least one input")
        if len(instances) > self.max_instances:
            raise RequestError(422, "too_many_instances",
                               f"{len(instances)} instances in one request; at most {self.max_instances}: "
                               "split the request")
        if self.text_parts:
            instances = [self._joined_text(i, instance) for i, instance in enumerate(instances)]
        if self.text_column and not self.text_bytes:
            return self._texts(instances)
        if self.columns and len(self.columns) == 1:  # rows whose one column holds an image: {"image": {"b64": ...}}
            column = self.columns[0]
            instances = [i[column] if isinstance(i, dict) and isinstance(i.get(column), dict) and "b64" in i[column]
                         else i for i in instances]
        if any(isinstance(i, dict) and "b64" in i for i in instances):
            instances = self._images(instances)
        named = any(isinstance(i, dict) for i in instances)
        if named:
            instances = self._by_column(instances)
        try:
            x = np.asarray(instances)
        except ValueError:  # ragged nesting
            raise RequestError(422, "wrong_shape", f"each instance must be a nested list of shape {shape}") from None
        if x.dtype == object and self.fillable and x.ndim == 2 and all(
                v is None or type(v) in (int, float) for v in x.flat):  # rows of numbers and nulls
            x = np.array([math.nan if v is None else v for v in x.flat], np.float64).reshape(x.shape)  # checked below
        if x.dtype == object:  # null, objects, integers beyond 64 bits
            raise RequestError(422, "wrong_type", f"instances must hold only numbers, in nested lists of shape {shape}")
        if x.dtype.kind not in "iuf":  # strings, booleans
            raise RequestError(422, "wrong_type", f"instances must hold numbers, got {_kind(x.dtype)}")
        if x.ndim == 4 and list(x.shape[1:]) != shape and channels_last(x.shape[1:]) == [*shape[1:], shape[0]]:
            x = x.transpose(0, 3, 1, 2)  # images channels last, as training read them (images.channels_last)
        elif (named or x.ndim == 2) and x.size == len(x) * math.prod(shape):
            x = x.reshape(len(x), *shape)  # flat rows (a table's columns, a CSV row) fill the input row-major
        if list(x.shape[1:]) != shape:
            flat = f" (or be a flat list of {math.prod(shape)} numbers)" if len(shape) > 1 else ""
            raise RequestError(422, "wrong_shape", f"each instance must have shape {shape}{flat}, "
                               f"got {list(x.shape[1:])}")
        with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused below
            x = x.astype(np.float32)
        bad = ~np.isfinite(x)
        if self.fillable:
            bad[:, self.fillable] &= ~np.isnan(x[:, self.fillable])  # blank cells the model fills
        if bad.any():  # NaN, Infinity, or beyond float32's range
            row = int(np.argwhere(bad.reshape(len(x), -1).any(axis=1))[0][0])
            raise RequestError(422, "not_finite", f"instance {row} holds NaN, Infinity or a number beyond float32"
                               + (f" (null is taken for {self.fillable_columns} only, the columns "
                                            "training saw blank)" if self.fillable else ""))
        tokens = x[:, : self.text_bytes or 0]  # a row as a list carries the text as token ids: 0..256 each
        if ((tokens != np.round(tokens)) | (tokens < 0) | (tokens >= byte_text.VOCAB_SIZE)).any():
            raise RequestError(422, "wrong_type", f"the first {self.text_bytes} numbers of a row are the bytes of "
                               f"its text ({self.text_column!r}, token ids 0..{byte_text.VOCAB_SIZE - 1}): send rows "
                               "as objects keyed by column name, with the text as a string")
        return x

    def _images(self, instances: list) -> list:
        """Image files, base64-encoded ({"b64": "..."}, TF Serving's convention), decoded as training decoded
        the model's images (_image)."""
        import base64
        import binascii

        pixels = []
        for i, instance in enumerate(instances):
            if not isinstance(instance, dict) or set(instance) != {"b64"} or not isinstance(instance["b64"], str):
                raise RequestError(422, "wrong_type", f'instance {i}: send every instance as {{"b64": "<base64 of '
                                   'an image file>"}, or every one as a nested list')
            try:
                raw = base64.b64decode(instance["b64"], validate=True)
            except binascii.Error:
                raise RequestError(422, "invalid_image", f"instance {i}: b64 is not base64") from None
            pixels.append(self._image(raw, f"instance {i}"))
        return pixels

    def _image(self, raw: bytes, name: str) -> np.ndarray:
        """An image file's pixels as training decoded the model's images: to its input shape, in grayscale
        or RGB."""
        from orchestrator.errors import DataError
        from orchestrator.images import decode_image

        shape = list(self.input_shape)
        if not takes_images(shape):
            raise RequestError(422, "wrong_type", f"this model takes inputs of shape {shape}, not images")
        try:
            return decode_image(raw, shape, name, max_pixels=MAX_IMAGE_PIXELS)
        except DataError as e:
            raise RequestError(422, "invalid_image", str(e)) from None

    def _texts(self, instances: list) -> np.ndarray:
        """Texts, as strings or objects keyed by the text column, as training read them: their bytes. Other
        keys of an object are left, as training left the other columns of its rows (ids, dates)."""
        column, values = self.text_column, []
        for i, instance in enumerate(instances):
            if isinstance(instance, dict):
                if column not in instance:
                    raise RequestError(422, "wrong_columns", f"instance {i}: send {{{json.dumps(column)}: "
                                       f"\"text\"}}, or the text alone; got the keys {sorted(instance)}")
                instance = instance[column]
            if not isinstance(instance, str):
                raise RequestError(422, "wrong_type", f"instance {i}: this model classifies text ({column!r}): send "
                                   f"a string, got {json.dumps(instance)[:80]}")
            values.append(instance)
        return byte_text.encode(values, self.input_shape[0])

    def _joined_text(self, i: int, instance):
        """An object with the text's columns (a title and a body), with them joined into the one text the model
        reads under its name, as training joined them (byte_text.join). Other instances are left as they are:
        a string is the whole text, a list carries it as token ids."""
        if not isinstance(instance, dict) or self.text_column in instance:
            return instance
        if missing := [c for c in self.text_parts if c not in instance]:
            raise RequestError(422, "wrong_columns", f"instance {i}: missing columns {missing}; the model reads "
                               f"the text of {self.text_parts}" + (" beside its other columns" if self.text_bytes
                                                                   else ""))
        if wrong := [c for c in self.text_parts if not isinstance(instance[c], str | None)]:
            raise RequestError(422, "wrong_type", f"instance {i}: {wrong[0]!r} takes text, got "
                               f"{json.dumps(instance[wrong[0]])[:80]}")
        return {**instance, self.text_column: byte_text.join(instance[c] for c in self.text_parts)}

    def _by_column(self, instances: list) -> list:
        """Objects keyed by column name, as lists in the training column order. Other keys are left, as training
        left the data's other columns (the label, ids, columns data.feature_columns did not name): rows of the
        training file go as they are. Where a column is missing, the other keys are named beside it (a
        misspelt column, most likely)."""
        if not self.columns:
            raise RequestError(422, "wrong_type", "this model was not trained on named columns: send each "
                               f"instance as a nested list of shape {list(self.input_shape)}")
        columns, rows = self.columns, []
        for i, instance in enumerate(instances):
            if not isinstance(instance, dict):
                raise RequestError(422, "wrong_type", f"instance {i} is not an object: send every instance as "
                                   f"an object keyed by column name, or every one as a list")
            if missing := [c for c in columns if c not in instance]:
                others = sorted(set(instance) - {*columns, *(self.text_parts or []), self.label_column})
                unknown = f", unknown columns {others}" if others else ""
                raise RequestError(422, "wrong_columns", f"instance {i}: missing columns {missing}{unknown}; the "
                                   f"model's columns are {columns}")
            row = [v for c in columns for v in self._encoded(i, c, instance[c])]
            rows.append(row[0] if len(row) == 1 else row)  # one column: a tensor column's list as it is
        return rows

    def _encoded(self, i: int, column: str, value) -> list:
        """A column's value as the model's features: a number as it is, a text column's value a 0/1 per
        category, a date (ISO 8601 text, or as training's data wrote it) its 7 features, the column of free
        text its bytes, as training encoded them."""
        if column == self.text_column:  # beside the table's columns; null is no text, as a blank cell in training
            if not isinstance(value, str) and value is not None:
                raise RequestError(422, "wrong_type", f"instance {i}: {column!r} takes text, got "
                                   f"{json.dumps(value)[:80]}")
            return byte_text.encode([value or ""], self.text_bytes)[0].tolist()
        if isinstance(value, str) and not value.strip() and (column in self.dates or column in self.written_forms):
            value = None  # a blank cell, as a file read as text gives it (predict --input), and as training read it
        if value is None and column in self.fillable_columns:
            return [math.nan] * len(table_features([column], self.categories, self.dates))  # filled by the model
        blank = (f" (null is taken for {self.fillable_columns}, the columns training saw blank)"
                 if value is None and self.fillable_columns else "")
        if column in self.dates:
            try:
                when = dates.parse(value, f"instance {i}: {column!r}", self.written_forms.get(column))
            except ValueError as e:
                raise RequestError(422, "wrong_type", f"{e}{blank}") from None
            return dates.features(np.array([when], dtype="datetime64[s]"))[0].tolist()
        if column in self.written_forms:  # a number as training's data wrote it ("$1,234.50"), or plain
            try:
                return [amounts.parse(value, self.written_forms[column])]
            except ValueError as e:
                raise RequestError(422, "wrong_type", f"instance {i}: {column!r}: {e}{blank}") from None
        if column not in self.categories:
            if isinstance(value, (str, dict)) or value is None:  # a list: a tensor column, checked by its shape
                raise RequestError(422, "wrong_type", f"instance {i}: {column!r} takes a number, got "
                                   f"{json.dumps(value)}{blank}")
            return [value]
        if not isinstance(value, str):
            listed = ", ".join(map(json.dumps, self.categories[column][:10]))
            raise RequestError(422, "wrong_type", f"instance {i}: {column!r} takes text, such as {listed}; got "
                               f"{json.dumps(value)}")
        return one_hot(np.array([value], dtype=str), self.categories[column])[0].tolist()

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
        probs = self.predict(np.zeros((1, *self.input_shape), dtype=self.input_dtype))
        return bool(np.isfinite(probs).all() and math.isclose(float(probs.sum()), 1.0, abs_tol=1e-3))


class TextGenerator:
    """A language model: POST /v1/generate {"prompt": "...", "max_new_tokens": 200, "temperature": 0.8,
    "top_k": 50, "seed": null}; the answer continues the prompt."""

    route = "/v1/generate"
    FIELDS = {"prompt", "max_new_tokens", "temperature", "top_k", "seed"}
    accepts = {media.JSON: '{"prompt": "text to continue", "max_new_tokens": 200, ...}',
               media.TEXT: "the prompt, continued with the default sampling"}

    def __init__(self, ckpt: Checkpoint, max_new_tokens: int = 512):
        # on a GPU when the replica has one (Ray hides the GPUs of a replica with num_gpus 0)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
        self.model = ckpt.model().to(self.device)
        self.max_new_tokens = max_new_tokens
        self.version = ckpt.weights_digest()[:12]
        self.info = _describe(ckpt, self.version, route=self.route,
                              input={"prompt": "text (UTF-8); the model reads its last "
                                               f"{self.model.shape.block_size} bytes",
                                     "max_new_tokens": max_new_tokens, "content_types": self.accepts})

    def decode(self, body: bytes, content_type: str = media.JSON) -> tuple[bytes, lm.Sampling]:
        kind, charset = media.media_type(content_type)
        kind = media.sniffed(kind, body)
        media.check(kind, self.accepts)
        if kind == media.TEXT:
            return self.validate({"prompt": media.text_of(body, charset)})
        return self.validate(_json_object(body, "prompt", '{"prompt": "text to continue", "max_new_tokens": 200}'))

    def from_python(self, payload) -> tuple[bytes, lm.Sampling]:
        """A request handed over in Python, not in a body (a DeploymentHandle's call): the prompt, or a dict as
        the body's."""
        if isinstance(payload, str):
            payload = {"prompt": payload}
        return self.validate(_holding(payload, "prompt", 'a prompt, or a dict {"prompt": "...", '
                                                          '"max_new_tokens": 200}'))

    def validate(self, payload: dict) -> tuple[bytes, lm.Sampling]:
        unknown = sorted(set(payload) - self.FIELDS)
        if unknown:
            raise RequestError(422, "unknown_field", f"unknown fields {unknown}; send {sorted(self.FIELDS)}")
        prompt = payload.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise RequestError(422, "invalid_prompt", 'prompt must be a non-empty string, e.g. {"prompt": "def "}')
        try:
            prompt_bytes = prompt.encode()
        except UnicodeEncodeError:  # JSON lets a lone surrogate (\ud800) through; UTF-8 has no bytes for it
            raise RequestError(422, "invalid_prompt", "prompt holds a lone UTF-16 surrogate: send valid Unicode text")
        default = lm.Sampling()
        n = payload.get("max_new_tokens", min(default.max_new_tokens, self.max_new_tokens))
        if not _is_int(n) or not 1 <= n <= self.max_new_tokens:
            bound = f"from 1 to {self.max_new_tokens}" if self.max_new_tokens < sys.maxsize else "of 1 or more"
            raise RequestError(422, "invalid_max_new_tokens", f"max_new_tokens must be an integer {bound}")
        temperature = payload.get("temperature", default.temperature)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 10:
            raise RequestError(422, "invalid_temperature", "temperature must be a number from 0 (greedy) to 10")
        top_k = payload.get("top_k", default.top_k)
        if top_k is not None and (not _is_int(top_k) or top_k < 1):
            raise RequestError(422, "invalid_top_k", "top_k must be a positive integer or null (no cut)")
        seed = payload.get("seed")
        if seed is not None and (not _is_int(seed) or not 0 <= seed < 2**63):
            raise RequestError(422, "invalid_seed", "seed must be a non-negative integer or null")
        return prompt_bytes, lm.Sampling(n, float(temperature), top_k, seed)

    def generate(self, requests: list[tuple[bytes, lm.Sampling]]) -> list[bytes]:
        """Continuations of every request, generated together."""
        return lm.generate(self.model, [p for p, _ in requests], [s for _, s in requests])

    def steps(self, request: tuple[bytes, lm.Sampling]) -> Iterator[int]:
        """One request's continuation, a byte at a time as the model makes it (a streamed answer)."""
        prompt, sampling = request
        return (step[0] for step in lm.steps(self.model, [prompt], [sampling]))

    def encode(self, request: tuple[bytes, lm.Sampling], completion: bytes) -> dict:
        return {
            "completion": completion.decode(errors="replace"),  # bytes cut mid-character show as U+FFFD
            "prompt": request[0].decode(errors="replace"),
            "num_new_tokens": len(completion),
            "model": {"name": self.info["name"], "version": self.version},
        }

    @torch.inference_mode()
    def canary(self) -> bool:
        """The next-byte distribution after a newline is finite."""
        logits = self.model(torch.tensor([[10]], device=self.device))
        return bool(torch.isfinite(logits).all())


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _kind(dtype: np.dtype) -> str:
    return {"b": "booleans", "U": "strings", "S": "strings"}.get(dtype.kind, str(dtype))
