"""The endpoint's replica: FastAPI routes, batching, and the model (API keys: orchestrator/auth.py).

One deployment, `Model`, is both the FastAPI ingress and the model. Each request already
passes Serve's ingress (HAProxy, or Serve's Python proxy); a separate ingress deployment would add
a second hop per request for no gain in a one-model endpoint. Every setting arrives through
`reconfigure` (the deployment's user_config), so a new checkpoint or limit applies to running
replicas in place.

Every request takes the same four steps: check (auth, route, body, input; a 4xx that says
why), run (batched with others when max_batch_size > 1), encode, and, if the model fails,
tell the model's fault (503, the replica is replaced) from the input's (422).
"""

import asyncio
import logging
import statistics
import time
import zlib
from collections.abc import AsyncIterator

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from ray import serve
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware

from orchestrator import __version__, completions, oip
from orchestrator import predictor as predictors
from orchestrator.auth import ApiKeys
from orchestrator.config import SERVE_DEPLOYMENT, ServeArgs
from orchestrator.errors import RequestError
from orchestrator.predictor import Predictor, TextGenerator

logger = logging.getLogger("ray.serve")

api = FastAPI(
    title="orchestrator model endpoint",
    description="Predictions from an orchestrator checkpoint. Send `Authorization: Bearer <API key>`.",
    version="1",
)


class Cors:
    """Calls from the web pages of ServeArgs.cors_origins: Starlette's CORSMiddleware for the origins
    the replica runs with, or none. Preflights (OPTIONS) are answered here, before auth, as browsers
    send them without the API key. A middleware is built once, but the origins arrive with each
    reconfigure: they are class state (a process holds one replica), and a change rebuilds it."""

    origins: tuple[str, ...] = ()

    def __init__(self, app):
        self.app = app
        self.built = ((), app)  # (origins, the ASGI app that serves them)

    async def __call__(self, scope, receive, send):
        if self.built[0] != Cors.origins:
            origins = Cors.origins
            self.built = (origins, CORSMiddleware(
                self.app, allow_origins=list(origins), allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "Content-Encoding"], max_age=600,
            ) if origins else self.app)
        await self.built[1](scope, receive, send)


api.add_middleware(Cors)


# ---- the deployment -----------------------------------------------------------------------


def _error(e: RequestError, body: dict | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
    return JSONResponse(body or e.body(), status_code=e.status, headers=headers)


def _openai_error(e: RequestError) -> JSONResponse:
    return _error(e, completions.error_body(e))


def _kserve_error(e: RequestError) -> JSONResponse:
    """An error of KServe's protocols (the Open Inference Protocol, v1) and TF Serving's, in their shape:
    {"error": "message"}."""
    return _error(e, {"error": e.message})


@api.exception_handler(HTTPException)
async def _routing_error(request: Request, e: HTTPException) -> JSONResponse:
    """FastAPI's own answers (an unknown path, a method a route does not take) in the endpoint's error shape."""
    headers = dict(e.headers or {})
    if e.status_code == 405:
        # Starlette lists a route's methods in a set's order, which changes from one process to the next
        allow = next((headers.pop(k) for k in list(headers) if k.lower() == "allow"), "")
        allowed = ", ".join(sorted(m.strip() for m in allow.split(",") if m.strip())) or "another method"
        headers["Allow"] = allowed
        error = RequestError(405, "method_not_allowed", f"{request.method} {request.url.path} is not served; "
                             f"use {allowed} (see /docs)")
    elif e.status_code == 404:
        error = RequestError(404, "not_found", f"no route {request.url.path}: see /docs for the routes")
    else:
        error = RequestError(e.status_code, "http_error", str(e.detail))
    return JSONResponse(error.body(), status_code=e.status_code, headers=headers)


GENERATE_DOCS = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["prompt"],
        "properties": {
            "prompt": {"type": "string", "description": "text to continue"},
            "max_new_tokens": {"type": "integer", "description": "bytes to generate (limits.max_new_tokens at most)"},
            "temperature": {"type": "number", "description": "0: always the most likely byte; default 0.8"},
            "top_k": {"type": ["integer", "null"], "description": "sample among the k most likely bytes; default 50"},
            "seed": {"type": ["integer", "null"], "description": "the same seed and prompt give the same text"},
        },
    }},
        "text/plain": {"schema": {"type": "string", "description": "the prompt, continued with the default "
                                  "sampling"}}}},
}

PREDICT_DOCS = {  # the body is parsed by hand (for its error messages), so describe it for /docs here
    "requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "description": "the inputs in one of these keys: instances (or inputs, or "
                                         "dataframe_records), or a table's columns as dataframe_split or inputs",
        "properties": {"instances": {"type": "array", "items": {},
                                     "description": "inputs, each a nested list of numbers of the model's input "
                                                    "shape (GET /v1/model: input.shape) or a flat list of its "
                                                    "size, or, for a model trained on a table, an object keyed "
                                                    "by column name (input.columns; a text column's value one of "
                                                    "input.categories; a date of input.dates as ISO 8601 text; "
                                                    "null for a column of input.blank_columns, "
                                                    "which the model fills), or, for a model of images, "
                                                    '{"b64": "<base64 of an image file>"}, or, for a model of '
                                                    'text (input.text_column), a string, or, where it is one of '
                                                    'input.columns, that key of the object'},
                       "inputs": {"type": ["array", "object"], "description": "as instances (MLflow, TF Serving), or "
                                  'a table\'s columns, each a list of values: {"age": [41, 29], "city": [...]}'},
                       "dataframe_records": {"type": "array", "items": {"type": "object"},
                                             "description": "rows keyed by column name, as instances (MLflow)"},
                       "dataframe_split": {"type": "object", "description": 'a table as pandas\' '
                                           'DataFrame.to_dict(orient="split") gives it: {"columns": [...], "data": '
                                           '[[...], ...]} (MLflow)'}},
    }},
        "text/csv": {"schema": {"type": "string", "description": "a table's rows: a header row naming the model's "
                                "columns (input.columns), then a row per input; for a model without columns, a row "
                                "of numbers per input, flat"}},
        "image/*": {"schema": {"type": "string", "format": "binary",
                               "description": "one image file (PNG, JPEG, ...), for a model of images"}},
        "text/plain": {"schema": {"type": "string", "description": "one text, for a model of text"}}}},
}


class Endpoint:
    """The replica: the FastAPI routes and the model. Plain Python; ModelServer below is its deployment."""

    def __init__(self):
        _replica_grpc_on_node_ip()
        self.args: ServeArgs | None = None
        self.predictor: Predictor | None = None
        self.inputs_on_loop = 0  # forward passes of at most this many inputs run on the event loop (_run)
        self.keys: ApiKeys | None = None

    async def reconfigure(self, config: dict) -> None:
        """Apply settings; load the checkpoint if it changed. Requests keep being answered by the
        current model until the new one has loaded and passed its canary."""
        args = ServeArgs.model_validate(config["args"])
        predictor, inputs_on_loop = self.predictor, self.inputs_on_loop
        loading = ("checkpoint", "max_instances", "max_new_tokens")
        if predictor is None or any(getattr(args, k) != getattr(self.args, k) for k in loading):
            predictor, inputs_on_loop = await asyncio.to_thread(_load, args)
        for batched in (self._predict_batch, self._generate_batch):
            batched.set_max_batch_size(args.max_batch_size)
            batched.set_batch_wait_timeout_s(args.batch_wait_timeout_s)
        self.keys = ApiKeys(args)
        Cors.origins = tuple(args.cors_origins)
        self.args, self.predictor, self.inputs_on_loop = args, predictor, inputs_on_loop

    def check_health(self) -> None:
        """Serve calls this every health_check_period_s; raising has the replica replaced."""
        if self.predictor is None or not _passes_canary(self.predictor):
            raise RuntimeError("the model fails its canary")

    @api.api_route("/v1/predict", methods=["POST", "PUT"], openapi_extra=PREDICT_DOCS)  # PUT: curl -T, TorchServe's
    async def predict(self, request: Request):
        """Body: {"instances": [input, ...]}, each input of the model's input shape (GET /v1/model)."""
        return await self._answer(request, Predictor, lambda p, x, probs, _: p.encode(_finite(probs)))

    @api.post("/v1/generate", openapi_extra=GENERATE_DOCS)
    async def generate(self, request: Request):
        """Body: {"prompt": "...", "max_new_tokens": 200, "temperature": 0.8, "top_k": 50, "seed": null}."""
        return await self._answer(request, TextGenerator, lambda g, item, completion, _: g.encode(item, completion))

    @api.post("/v1/completions")
    async def openai_completions(self, request: Request):
        """OpenAI's completions (completions.py), for its clients: the same model and batches as /v1/generate."""
        return await self._answer(request, TextGenerator, completions.encode, completions.decode, _openai_error,
                                  completions.events)

    @api.get("/v1/models")
    async def openai_models(self, request: Request):
        """OpenAI's list of models: the one served."""
        try:
            self.keys.check(request)
        except RequestError as e:
            return _openai_error(e)
        return completions.models(self.predictor)

    @api.post("/v2/models/{name}/infer")
    @api.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(self, request: Request, name: str, version: str | None = None):
        """The Open Inference Protocol's infer (oip.py): the same model, batches and checks as /v1/predict."""
        def decode(predictor: Predictor, body: bytes) -> tuple[np.ndarray, dict]:
            self._named(name, version)
            return oip.decode(predictor, body, request.headers)

        return await self._answer(request, Predictor, lambda p, x, probs, asked: oip.encode(p, _finite(probs), asked),
                                  decode, _kserve_error)

    @api.post("/v1/models/{name}:predict")
    @api.post("/v1/models/{name}/versions/{version}:predict")
    async def kserve_predict(self, request: Request, name: str, version: str | None = None):
        """KServe's v1 protocol and TF Serving's REST API, at their clients' paths: /v1/predict's bodies and answer
        ({"instances": [...]} -> {"predictions": [...], ...}), the model named in the path."""
        def decode(predictor: Predictor, body: bytes) -> tuple[np.ndarray, None]:
            self._named(name, version)
            return predictor.decode(body, request.headers.get("content-type", "")), None

        return await self._answer(request, Predictor, lambda p, x, probs, _: p.encode(_finite(probs)), decode,
                                  _kserve_error)

    @api.get("/v1/models/{name}")
    async def kserve_model(self, request: Request, name: str):
        """KServe v1's model probe, {"name", "ready"}; for a language model, OpenAI's model object, as its clients
        retrieve it (GET /v1/models/{model})."""
        try:
            self.keys.check(request)
            self._named(name)
        except RequestError as e:
            return _openai_error(e) if isinstance(self.predictor, TextGenerator) else _kserve_error(e)
        if isinstance(self.predictor, TextGenerator):
            return completions.models(self.predictor)["data"][0]
        ready = await asyncio.to_thread(_passes_canary, self.predictor)
        return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)

    async def _answer(self, request: Request, kind: type, encode, decode=None, error=_error, stream=None):
        """A request to a model of `kind`: checked (a 4xx that says why), decoded into the model's item and what
        its answer needs (`decode`; default: the model's own, by the body's Content-Type, needing nothing more),
        run in a batch with others or alone, encoded. A run that fails goes to _not_answered, which tells the
        model's fault from the input's. Where the request asks for a stream (and the route has `stream`, which
        makes server-sent events of the bytes generated), its generation runs alone, streamed as it goes."""
        if decode is None:
            content_type = request.headers.get("content-type", "")  # the model's decode reads it (media.py)

            def decode(model, body: bytes):
                return model.decode(body, content_type), None
        try:
            self.keys.check(request)
            model = self._serving(kind)
            body = await self._body(request)
            small = len(body) <= DECODE_ON_LOOP_BYTES
            item, asked = decode(model, body) if small else await asyncio.to_thread(decode, model, body)
        except RequestError as e:
            return error(e)
        if stream is not None and asked.get("stream"):
            return StreamingResponse(stream(model, item, asked, self._made(model, item)),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            model, result = await self._result(model, item)
            return JSONResponse(encode(model, item, result, asked))  # JSON types: skip FastAPI's encoder walk
        except Exception as e:  # noqa: BLE001 (a broken model's NaN, or inputs that overflow it)
            return await self._not_answered(model, e)

    async def _result(self, model, item):
        """The model's result for one request's item, with the model that gave it (a reconfigure may replace
        self.predictor meanwhile): in a batch with other requests' items, or alone."""
        classifies = isinstance(model, Predictor)
        if self.args.max_batch_size > 1:
            return await (self._predict_batch if classifies else self._generate_batch)(item)
        if classifies:
            return model, await self._run(model.predict, item, inputs=len(item))
        return model, await self._run(lambda: model.generate([item])[0], inputs=None)

    @staticmethod
    async def _made(generator: TextGenerator, item) -> AsyncIterator[int]:
        """A generation's bytes as the model makes them: alone, not in a batch (its client reads each as it
        comes), each step in a thread; no step runs once the stream stops asking (a stop sequence, a client
        gone)."""
        steps = generator.steps(item)
        while (byte := await asyncio.to_thread(next, steps, None)) is not None:
            yield byte

    # For Python already in the cluster, through a DeploymentHandle (Serve's model composition: a deployment
    # that calls this one), without HTTP: serve.get_app_handle(app).predict_inputs.remote(x).result(). The
    # same model, checks and batches as the routes; bad input raises the RequestError the route answers with.
    # No API key: a handle's caller is code the cluster runs, behind Ray's own token auth.

    async def predict_inputs(self, inputs) -> dict:
        """What POST /v1/predict answers for these inputs (Predictor.from_python: a list, an array, a DataFrame)."""
        model = self._serving(Predictor)
        model, probs = await self._result(model, model.from_python(inputs))
        return model.encode(_finite(probs))

    async def generate_text(self, request) -> dict:
        """What POST /v1/generate answers: request is the prompt, or a dict as the body's."""
        generator = self._serving(TextGenerator)
        item = generator.from_python(request)
        generator, completion = await self._result(generator, item)
        return generator.encode(item, completion)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _generate_batch(self, items: list) -> list:
        """Prompts that arrive together are continued together, one forward pass per byte for all."""
        generator = self.predictor
        completions = await asyncio.to_thread(generator.generate, items)
        return [(generator, c) for c in completions]

    def _serving(self, kind: type):
        """The model, if it is of the kind this route serves; else 404 naming the route that serves it."""
        predictor = self.predictor
        if not isinstance(predictor, kind):
            what = "a language model" if isinstance(predictor, TextGenerator) else "a classifier"
            raise RequestError(404, "wrong_route", f"this endpoint serves {what}: use POST {predictor.route}")
        return predictor

    async def _not_answered(self, predictor: Predictor, error: Exception) -> JSONResponse:
        """A forward pass that failed or gave no probability distribution. If the model still passes
        its canary, the inputs are at fault (422: values far beyond the training range overflow), or
        it is a bug (500). If not, the replica is broken: 503 with Retry-After, so the client retries
        and another replica answers, while the failing health check has Serve replace this one."""
        if await asyncio.to_thread(_passes_canary, predictor):
            if isinstance(error, FloatingPointError):
                return _error(RequestError(422, "output_not_finite", "the model's output for these inputs is not "
                                           "finite: send values in the range the model was trained on"))
            raise error
        logger.error("the model fails its canary (%s): answering 503 until Serve replaces this replica", error)
        body = {"error": {"code": "replica_unhealthy", "message": "this replica's model is broken; retry"}}
        return JSONResponse(body, status_code=503, headers={"Retry-After": str(self.args.retry_after_s)})

    # Two batches at a time: one fills (decoding its requests) while the other runs its forward pass
    # in a thread (a pass too long for the event loop: _run). With one, the model idled while a batch
    # filled: 435 against 572 requests/s at 64 clients (serve_throughput.py's CNN, behind HAProxy,
    # 2 cores, when every pass ran in a thread), where unbatched did 375.
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005, max_concurrent_batches=2)
    async def _predict_batch(self, xs: list[np.ndarray]) -> list[tuple[Predictor, np.ndarray]]:
        """Requests that arrive together share one forward pass (settings from reconfigure)."""
        predictor, x = self.predictor, np.concatenate(xs)
        probs = await self._run(predictor.predict, x, inputs=len(x))
        return [(predictor, p) for p in np.split(probs, np.cumsum([len(x) for x in xs])[:-1])]

    async def _run(self, fn, *args, inputs: int | None):
        """fn(*args), a forward pass of `inputs` inputs (None: a generation, many passes): on the event loop
        if it is short (_inputs_on_loop), else in a thread, so that the loop goes on with other requests."""
        if inputs is not None and inputs <= self.inputs_on_loop:
            return fn(*args)
        return await asyncio.to_thread(fn, *args)

    async def _body(self, request: Request) -> bytes:
        limit = self.args.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise RequestError(413, "body_too_large", f"the body is {declared} bytes; at most {limit}")
        encoding = request.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            raise RequestError(415, "unsupported_encoding",
                               f"send the body uncompressed or with Content-Encoding: gzip (got {encoding!r})")
        body = bytearray()
        async for chunk in request.stream():  # also bounds bodies sent without Content-Length
            body += chunk
            if len(body) > limit:
                raise RequestError(413, "body_too_large", f"the body exceeds {limit} bytes")
        return _gunzip(bytes(body), limit) if encoding == "gzip" else bytes(body)

    @api.get("/v1/model")
    async def model(self, request: Request):
        try:
            self.keys.check(request)
        except RequestError as e:
            return _error(e)
        limits = self.args.model_dump(include={"max_instances", "max_new_tokens", "max_body_bytes", "max_batch_size",
                                               "batch_wait_timeout_s", "max_ongoing_requests",
                                               "max_queued_requests"})
        return {**self.predictor.info, "registry": self.args.registered,
                "previous_checkpoints": self.args.previous_checkpoints, "limits": limits}

    def _named(self, name: str, version: str | None = None) -> None:
        """404 unless the path names the model served (and its version, where it names one)."""
        model = self.predictor.info["name"]
        if name != model or version not in (None, self.predictor.version):
            what = f"version {version!r} of {name!r}" if name == model else f"model {name!r}"
            raise RequestError(404, "model_not_found", f"there is no {what} here: this endpoint serves {model!r}, "
                               f"version {self.predictor.version!r}")

    @api.get("/v2/models/{name}")
    @api.get("/v2/models/{name}/versions/{version}")
    async def v2_model(self, request: Request, name: str, version: str | None = None):
        try:
            self.keys.check(request)
            self._serving(Predictor)
            self._named(name, version)
        except RequestError as e:
            return _kserve_error(e)
        return oip.metadata(self.predictor)

    @api.get("/v2")
    async def v2_server(self):
        return {"name": "orchestrator", "version": __version__, "extensions": []}

    @api.get("/v2/health/live")
    async def v2_live(self):
        return {"live": True}

    @api.get("/v2/health/ready")
    @api.get("/v2/models/{name}/ready")
    async def v2_ready(self, name: str | None = None):
        ready = self.predictor is not None and await asyncio.to_thread(_passes_canary, self.predictor)
        if ready and name is not None:
            try:
                self._named(name)
            except RequestError as e:
                return _kserve_error(e)
        return JSONResponse({"ready": ready} if name is None else {"name": name, "ready": ready},
                            status_code=200 if ready else 503)

    @api.api_route("/healthz", methods=["GET", "HEAD"])  # some load balancers probe with HEAD
    async def healthz(self):
        return {"status": "ok"}

    @api.api_route("/readyz", methods=["GET", "HEAD"])
    async def readyz(self):
        ready = self.predictor is not None and await asyncio.to_thread(_passes_canary, self.predictor)
        body = {"ready": ready, "version": self.predictor.version if self.predictor else None}
        return JSONResponse(body, status_code=200 if ready else 503)


def _load(args: ServeArgs) -> tuple[Predictor | TextGenerator, int]:
    """The checkpoint's predictor, once it passes its canary, and _inputs_on_loop for it (off the event loop)."""
    predictor = predictors.load(args.checkpoint, args.storage_endpoint_url, args.max_instances, args.max_new_tokens)
    if not predictor.canary():
        raise RuntimeError(f"{args.checkpoint}: the model fails its canary (its output is not finite)")
    return predictor, _inputs_on_loop(predictor)


# A forward pass predicted to take less than this runs on the replica's event loop, not in a thread.
# Handing a pass to a thread and back costs each request two switches of the GIL, which under load
# cost more than a pass of a fraction of a millisecond: serve_throughput.py's CNN (0.16 ms a pass)
# answered 515 requests/s from a thread and 611 on the loop, at 8 clients behind HAProxy, where plain
# uvicorn answered 731 and 749. A longer pass goes to a thread, as it would hold up every other
# request's decoding and Serve's own health checks for as long as it runs.
ON_LOOP_S = 0.002
# A body larger than this is parsed (and its images decoded) in a thread, for the same reason: parsing
# 64 KiB of JSON takes about as long as a short pass, and an image request's decoding far longer.
DECODE_ON_LOOP_BYTES = 64 * 1024


def _inputs_on_loop(predictor, probe: int = 32) -> int:
    """The most inputs whose forward pass takes under ON_LOOP_S: a + b*n fitted to passes of 1 and `probe`
    zero inputs, timed here (the median of 3 each). 0 when one input already takes longer, or for a
    language model (a generation is many passes)."""
    if not isinstance(predictor, Predictor):
        return 0

    def seconds(n: int) -> float:
        x = np.zeros((n, *predictor.input_shape), dtype=predictor.input_dtype)
        predictor.predict(x)  # warm: allocations, and a GPU's first kernels
        times = []
        while len(times) < 3 and (not times or times[-1] < ON_LOOP_S):  # a big model: one timed pass will do
            start = time.perf_counter()
            predictor.predict(x)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    one = seconds(1)
    if one >= ON_LOOP_S:
        return 0
    per_input = max(seconds(probe) - one, 1e-9) / (probe - 1)
    return 1 + int((ON_LOOP_S - one) / per_input)


def _replica_grpc_on_node_ip() -> None:
    """Serve 2.60 starts each replica's inter-deployment gRPC server on [::], every interface,
    whatever the node's IP. Bind it to the node's IP, as Ray core does its own servers: 127.0.0.1
    on the embedded Ray, the private address on a cluster. Routers reach it at node IP:port, and
    Ray's replica module looks this helper up when it starts the server, after our constructor."""
    import ray
    from ray._common.network_utils import build_address
    from ray.serve._private import replica

    bind = getattr(replica, "add_port_to_grpc_server", None)
    if not ray.is_initialized() or bind is None or getattr(bind, "on_node_ip", False):
        return  # not in a replica (e.g. a unit test), or done already
    node_ip = ray.util.get_node_ip_address()

    def on_node_ip(server, address: str):
        if address.startswith("[::]:"):
            address = build_address(node_ip, address.removeprefix("[::]:"))
        return bind(server, address)

    on_node_ip.on_node_ip = True
    replica.add_port_to_grpc_server = on_node_ip


def _gunzip(body: bytes, limit: int) -> bytes:
    """A gzip body, decompressed no further than `limit` bytes: a small bomb cannot fill the replica's memory."""
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)  # 16+: the gzip header and trailer
    try:
        data = inflate.decompress(body, limit + 1)
    except zlib.error as e:
        raise RequestError(400, "invalid_gzip", f"Content-Encoding is gzip but the body is not gzip ({e})") from None
    if len(data) > limit:
        raise RequestError(413, "body_too_large", f"the body decompresses to more than {limit} bytes")
    if not inflate.eof:
        raise RequestError(400, "invalid_gzip", "the gzip body is cut short")
    return data


def _finite(probs: np.ndarray) -> np.ndarray:
    if not np.isfinite(probs).all():
        raise FloatingPointError("the model's output is not finite")
    return probs


def _passes_canary(predictor: Predictor) -> bool:
    try:
        return predictor.canary()
    except Exception:  # noqa: BLE001 (a model that cannot even run the canary is broken)
        return False


ModelServer = serve.deployment(name=SERVE_DEPLOYMENT)(serve.ingress(api)(Endpoint))

