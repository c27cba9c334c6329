"""Ray Serve adapter: a checkpoint as an autoscaled HTTP endpoint, and its operations.

    orchestrator serve runs/digits-cnn-.../epoch-0025          # local; prints the URL, Ctrl-C stops
    orchestrator serve s3://bucket/m/best --address auto       # deploy to a cluster (rolling update if running)
    orchestrator serve models:/digits@production               # a registry version; follows promote/rollback
    orchestrator serve rollback --address auto                 # back to the previous checkpoint
    serve run deploy/serve.yaml                                # Ray's own CLI, the same app

One deployment, `Model`, is both the FastAPI ingress and the model. Each request already
passes Serve's HTTP proxy; a separate ingress deployment would add a second actor call per
request for no gain in a one-model endpoint. Every setting travels in the deployment's
user_config, so deploying a new checkpoint or limit reconfigures the running replicas in
place (no restart, no failed request); only resources restart replicas, one at a time.

API: POST /v1/predict {"instances": [...]} (classifiers), POST /v1/generate {"prompt": "..."}
(language models), GET /v1/model, GET /healthz, GET /readyz, /docs.
"""

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import os
import time
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.config import BackpressureConfig

from orchestrator import predictor as predictors
from orchestrator.config import REGISTRY_DEFAULT, ServeArgs, parse
from orchestrator.errors import ConfigError
from orchestrator.predictor import Predictor, RequestError, TextGenerator

APP_NAME = "orchestrator"
DEPLOYMENT = "Model"
HISTORY = 10  # previous checkpoints kept for rollback
logger = logging.getLogger("ray.serve")

api = FastAPI(
    title="orchestrator model endpoint",
    description="Predictions from an orchestrator checkpoint. Send `Authorization: Bearer <API key>`.",
    version="1",
)


# ---- auth ---------------------------------------------------------------------------------


class ApiKeys:
    """Bearer API keys, kept as sha256 digests and compared in constant time; never logged."""

    def __init__(self, args: ServeArgs):
        self.mode = args.auth
        self.source = args.api_keys_file or f"${args.api_keys_env}"
        self.digests = [hashlib.sha256(k.encode()).digest() for k in read_api_keys(args)]
        if self.mode == "required" and not self.digests:
            raise ConfigError(f"auth is required but {self.source} holds no API keys")

    def check(self, request: Request) -> None:
        if self.mode == "none":
            return
        if not self.digests:
            if _is_loopback(request.client.host if request.client else ""):
                return
            raise RequestError(401, "api_key_required",
                               f"this endpoint has no API keys, so it answers loopback clients only; "
                               f"set {self.source} on the Ray nodes")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise RequestError(401, "missing_api_key", "send the header Authorization: Bearer <API key>")
        digest = hashlib.sha256(token.strip().encode()).digest()
        valid = False
        for known in self.digests:  # no early exit: the time taken does not say which key matched
            valid |= hmac.compare_digest(known, digest)
        if not valid:
            raise RequestError(403, "invalid_api_key", "the API key is not valid")


def read_api_keys(args: ServeArgs) -> list[str]:
    if args.api_keys_file:
        try:
            text = Path(args.api_keys_file).read_text()
        except OSError as e:
            raise ConfigError(f"cannot read api_keys_file {args.api_keys_file}: {e.strerror}") from None
        return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return [k.strip() for k in os.environ.get(args.api_keys_env, "").split(",") if k.strip()]


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


# ---- the deployment -----------------------------------------------------------------------


def _error(e: RequestError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
    return JSONResponse(e.body(), status_code=e.status, headers=headers)


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
    }}}},
}

PREDICT_DOCS = {  # the body is parsed by hand (for its error messages), so describe it for /docs here
    "requestBody": {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": ["instances"],
        "properties": {"instances": {"type": "array", "items": {},
                                     "description": "inputs, each a nested list of numbers of the model's input "
                                                    "shape (GET /v1/model: input.shape)"}},
    }}}},
}


class Endpoint:
    """The replica: the FastAPI routes and the model. Plain Python; ModelServer below is its deployment."""

    def __init__(self):
        _replica_grpc_on_node_ip()
        self.args: ServeArgs | None = None
        self.predictor: Predictor | None = None
        self.keys: ApiKeys | None = None

    async def reconfigure(self, config: dict) -> None:
        """Apply settings; load the checkpoint if it changed. Requests keep being answered by the
        current model until the new one has loaded and passed its canary."""
        args = ServeArgs.model_validate(config["args"])
        predictor = self.predictor
        loading = ("checkpoint", "max_instances", "max_new_tokens")
        if predictor is None or any(getattr(args, k) != getattr(self.args, k) for k in loading):
            predictor = await asyncio.to_thread(predictors.load, args.checkpoint, args.storage_endpoint_url,
                                                args.max_instances, args.max_new_tokens)
            if not predictor.canary():
                raise RuntimeError(f"{args.checkpoint}: the model fails its canary (its output is not finite)")
        for batched in (self._predict_batch, self._generate_batch):
            batched.set_max_batch_size(args.max_batch_size)
            batched.set_batch_wait_timeout_s(args.batch_wait_timeout_s)
        self.keys = ApiKeys(args)
        self.args, self.predictor = args, predictor

    def check_health(self) -> None:
        """Serve calls this every health_check_period_s; raising has the replica replaced."""
        if self.predictor is None or not _passes_canary(self.predictor):
            raise RuntimeError("the model fails its canary")

    @api.post("/v1/predict", openapi_extra=PREDICT_DOCS)
    async def predict(self, request: Request):
        """Body: {"instances": [input, ...]}, each input of the model's input shape (GET /v1/model)."""
        return await self._answer(request, Predictor, self._predict_batch, lambda p, x: p.predict(x),
                                  lambda p, x, probs: p.encode(_finite(probs)))

    @api.post("/v1/generate", openapi_extra=GENERATE_DOCS)
    async def generate(self, request: Request):
        """Body: {"prompt": "...", "max_new_tokens": 200, "temperature": 0.8, "top_k": 50, "seed": null}."""
        return await self._answer(request, TextGenerator, self._generate_batch, lambda g, item: g.generate([item])[0],
                                  lambda g, item, completion: g.encode(item, completion))

    async def _answer(self, request: Request, kind: type, batched, run, encode):
        """A request to a model of `kind`: checked (a 4xx that says why), run in a batch with others or
        alone, encoded. A run that fails goes to _not_answered, which tells the model's fault from the input's."""
        try:
            self.keys.check(request)
            model = self._serving(kind)
            item = model.decode(await self._body(request))
        except RequestError as e:
            return _error(e)
        try:
            if self.args.max_batch_size > 1:
                model, result = await batched(item)
            else:
                result = await asyncio.to_thread(run, model, item)
            return encode(model, item, result)
        except Exception as e:  # noqa: BLE001 (a broken model's NaN, or inputs that overflow it)
            return await self._not_answered(model, e)

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

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _predict_batch(self, xs: list[np.ndarray]) -> list[tuple[Predictor, np.ndarray]]:
        """Requests that arrive together share one forward pass (settings from reconfigure)."""
        predictor = self.predictor
        probs = await asyncio.to_thread(predictor.predict, np.concatenate(xs))
        return [(predictor, p) for p in np.split(probs, np.cumsum([len(x) for x in xs])[:-1])]

    async def _body(self, request: Request) -> bytes:
        limit = self.args.max_body_bytes
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise RequestError(415, "unsupported_media_type",
                               f"send Content-Type: application/json (got {content_type or 'none'!r})")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise RequestError(413, "body_too_large", f"the body is {declared} bytes; at most {limit}")
        body = bytearray()
        async for chunk in request.stream():  # also bounds bodies sent without Content-Length
            body += chunk
            if len(body) > limit:
                raise RequestError(413, "body_too_large", f"the body exceeds {limit} bytes")
        return bytes(body)

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

    @api.get("/healthz")
    async def healthz(self):
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self):
        ready = self.predictor is not None and await asyncio.to_thread(_passes_canary, self.predictor)
        body = {"ready": ready, "version": self.predictor.version if self.predictor else None}
        return JSONResponse(body, status_code=200 if ready else 503)


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


def _finite(probs: np.ndarray) -> np.ndarray:
    if not np.isfinite(probs).all():
        raise FloatingPointError("the model's output is not finite")
    return probs


def _passes_canary(predictor: Predictor) -> bool:
    try:
        return predictor.canary()
    except Exception:  # noqa: BLE001 (a model that cannot even run the canary is broken)
        return False


ModelServer = serve.deployment(name=DEPLOYMENT)(serve.ingress(api)(Endpoint))


def build_app(args: ServeArgs):
    """The Serve app for a checkpoint: the import_path target of deploy/serve.yaml."""
    if isinstance(args, dict):
        args = parse(ServeArgs, args, source="serve args")
    return ModelServer.options(**deployment_options(resolve(args))).bind()


def resolve(args: ServeArgs) -> ServeArgs:
    """A models:/ reference (given as the checkpoint, or followed from an earlier deploy) made into
    the registry version's checkpoint; other args as they are."""
    from orchestrator.registry import Registry, is_ref

    ref = args.checkpoint if is_ref(args.checkpoint) else args.model_ref
    if ref is None:
        return args
    registry = Registry(args.registry or REGISTRY_DEFAULT, args.storage_endpoint_url)
    record = registry.resolve_uri(ref)
    registered = {"ref": ref, "registry": registry.root, "aliases": record["aliases"],
                  **{k: record[k] for k in ("model", "version", "registered_at", "metrics")}}
    return args.model_copy(update={"checkpoint": record["checkpoint"], "model_ref": ref, "registry": registry.root,
                                   "registered": registered})


def deployment_options(args: ServeArgs) -> dict:
    return {
        "user_config": {"args": args.model_dump(mode="json")},
        "autoscaling_config": args.autoscaling.model_dump(),
        "max_ongoing_requests": args.max_ongoing_requests,
        "max_queued_requests": args.max_queued_requests,
        "backpressure_config": BackpressureConfig(status_code=503, retry_after_s=args.retry_after_s),
        "ray_actor_options": {"num_cpus": args.num_cpus, "num_gpus": args.num_gpus},
        "health_check_period_s": args.health_check_period_s,
    }


# ---- operations (driver side) ---------------------------------------------------------------


def check_deployable(args: ServeArgs, host: str) -> tuple[ServeArgs, Predictor]:
    """Fail before touching a running app: the checkpoint (or registry version) verifies and loads,
    keys exist if needed."""
    args = resolve(args)
    if "://" not in args.checkpoint:  # replicas do not share the caller's working directory
        args = args.model_copy(update={"checkpoint": str(Path(args.checkpoint).resolve())})
    predictor = predictors.load(args.checkpoint, args.storage_endpoint_url, args.max_instances, args.max_new_tokens)
    check_auth(args, host)
    return args, predictor


def check_auth(args: ServeArgs, host: str) -> None:
    """An endpoint beyond loopback needs API keys (unless auth is none); auth: required needs keys."""
    if args.auth != "none" and not _is_loopback(host) and not read_api_keys(args):
        raise ConfigError(f"--host {host} exposes the endpoint beyond this machine: set API keys in "
                          f"${args.api_keys_env} (comma-separated) or api_keys_file first")
    ApiKeys(args)


def deploy(args: ServeArgs, *, name: str = APP_NAME, route_prefix: str = "/", host: str = "127.0.0.1",
           port: int = 8000, request_timeout_s: float | None = 30, timeout_s: float = 180,
           keep_history: bool = True, checked: Predictor | None = None) -> dict:
    """Deploy the app on the connected Ray, or update it in place if it runs; wait until it serves
    the new checkpoint. The checkpoint it replaces becomes the rollback target. `checked`: the
    predictor check_deployable already loaded for these args (not loaded twice)."""
    from ray.serve.schema import ServeDeploySchema

    args, predictor = (args, checked) if checked else check_deployable(args, host)
    serve.start(http_options={"host": host, "port": port, "request_timeout_s": request_timeout_s})
    client = _client()
    details = client.get_serve_details()
    apps = {n: a["deployed_app_config"] for n, a in details.get("applications", {}).items()
            if a.get("deployed_app_config")}
    current = _args_of(apps.get(name))
    if current is None:
        apps[name] = {"name": name, "route_prefix": route_prefix, "import_path": f"{__name__}:build_app",
                      "args": args.model_dump(mode="json")}
    elif keep_history and current.checkpoint != args.checkpoint:
        history = [current.checkpoint, *current.previous_checkpoints][:HISTORY]
        args = args.model_copy(update={"previous_checkpoints": history})
    # The app's args are part of Serve's code version: changing them would restart every replica.
    # Deployment options (user_config above all) are not: replicas reconfigure in place. So the
    # app keeps its first args, and every deploy, the first included, sets the options.
    apps[name] = {**apps[name], "deployments": [{"name": DEPLOYMENT, **_json_options(args)}]}
    client.deploy_apps(ServeDeploySchema.model_validate({"applications": list(apps.values())}))
    http = details.get("http_options") or {"host": host, "port": port}
    prefix = apps[name]["route_prefix"] or "/"
    url = f"http://{_url_host(http['host'])}:{http['port']}{prefix.rstrip('/')}"
    _wait_serving(client, name, url, predictor.version, timeout_s)
    return {"app": name, "url": url, "checkpoint": args.checkpoint, "version": predictor.version,
            "previous_checkpoints": args.previous_checkpoints, "registered": args.registered}


def rollback(name: str = APP_NAME, **http) -> dict:
    """Serve the previous checkpoint again (with the current settings)."""
    current = running_args(name)
    if not current.previous_checkpoints:
        raise ConfigError(f"app {name!r} has no previous checkpoint to roll back to")
    back = current.model_copy(update={"checkpoint": current.previous_checkpoints[0],
                                      "previous_checkpoints": current.previous_checkpoints[1:],
                                      "model_ref": None, "registered": None})  # a checkpoint, not an alias now
    return deploy(back, name=name, keep_history=False, **http)


def follow_alias(model: str, alias: str, registry_root: str, **http) -> list[dict]:
    """Move every app that serves models:/MODEL@ALIAS from this registry to where the alias points
    now: a rolling update (replicas reconfigure in place), as `deploy` does."""
    ref = f"models:/{model}@{alias}"
    moved = []
    for name, app in _client().get_serve_details().get("applications", {}).items():
        args = _args_of(app.get("deployed_app_config"))
        if args and args.model_ref == ref and args.registry == registry_root:
            moved.append(deploy(args, name=name, **http))
    return moved



def running_args(name: str = APP_NAME) -> ServeArgs:
    app = _client().get_serve_details().get("applications", {}).get(name)
    args = _args_of(app.get("deployed_app_config")) if app else None
    if args is None:
        raise ConfigError(f"no orchestrator app named {name!r} runs on this Ray cluster")
    return args


def status() -> dict:
    """Each app: status, checkpoint, replicas by state."""
    details = _client().get_serve_details()
    out = {}
    for app_name, app in details.get("applications", {}).items():
        deployments = app.get("deployments", {})
        replicas: dict[str, int] = {}
        for d in deployments.values():
            for r in d.get("replicas", []):
                state = _plain(r["state"])
                replicas[state] = replicas.get(state, 0) + 1
        args = _args_of(app.get("deployed_app_config"))
        out[app_name] = {"status": _plain(app["status"]), "route_prefix": app.get("route_prefix"),
                         "checkpoint": args.checkpoint if args else None, "replicas": replicas,
                         "message": app.get("message") or None}
    return {"applications": out, "http_options": details.get("http_options")}


def shutdown(name: str = APP_NAME) -> dict:
    running_args(name)  # a clear error if it is not there
    serve.delete(name)
    return {"app": name, "deleted": True}


def _plain(value) -> str:
    return str(getattr(value, "value", value))  # Serve's status enums, as JSON-able text


def _client():
    from ray.serve.context import (
        _get_global_client,  # what Ray's own `serve run CONFIG` deploys through
    )

    return _get_global_client()


def _args_of(app_config: dict | None) -> ServeArgs | None:
    """The settings an app runs with: its deployment override (set by updates), else its args."""
    if not app_config or app_config.get("import_path") != f"{__name__}:build_app":
        return None
    for d in app_config.get("deployments") or []:
        if d.get("name") == DEPLOYMENT and isinstance(d.get("user_config"), dict) and "args" in d["user_config"]:
            return ServeArgs.model_validate(d["user_config"]["args"])
    return ServeArgs.model_validate(app_config.get("args") or {})


def _json_options(args: ServeArgs) -> dict:
    options = deployment_options(args)
    return {**options, "backpressure_config": options["backpressure_config"].model_dump()}


def _url_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def _wait_serving(client, name: str, url: str, version: str, timeout_s: float) -> None:
    import json
    import urllib.request

    deadline = time.time() + timeout_s
    seen = 0
    while time.time() < deadline:
        app = client.get_serve_details().get("applications", {}).get(name, {})
        if app.get("status") == "DEPLOY_FAILED":
            raise RuntimeError(f"deploying {name} failed: {app.get('message')}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as r:
                ready = json.loads(r.read())
        except OSError:
            ready = {}
        # several consecutive answers with the new version: the proxy spreads them over replicas
        seen = seen + 1 if ready.get("version") == version and app.get("status") == "RUNNING" else 0
        if seen >= 3:
            return
        time.sleep(0.5)
    raise RuntimeError(f"{name} did not serve version {version} within {timeout_s:.0f}s; see `orchestrator serve status`")
