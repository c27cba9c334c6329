"""Ray Serve adapter: a checkpoint as an autoscaled HTTP endpoint, and its operations.

    orchestrator serve runs/digits-cnn-.../epoch-0025          # local; prints the URL, Ctrl-C stops
    orchestrator serve s3://bucket/m/best --address auto       # deploy to a cluster (rolling update if running)
    orchestrator serve models:/digits@production               # a registry version; follows promote/rollback
    orchestrator serve rollback --address auto                 # back to the previous checkpoint
    serve run deploy/serve.yaml                                # Ray's own CLI, the same app

The replica itself is orchestrator/endpoint.py. Every setting travels in the deployment's
user_config, so deploying a new checkpoint or limit reconfigures the running replicas in
place (no restart, no failed request); only resources restart replicas, and a new replica serves
before the old one stops (max_surge_percent).

API: POST /v1/predict {"instances": [...]} (classifiers), POST /v1/generate {"prompt": "..."}
(language models), GET /v1/model, GET /healthz, GET /readyz, /docs.
"""

import time
from pathlib import Path

from orchestrator import predictor as predictors
from orchestrator.auth import ApiKeys, is_loopback, read_api_keys
from orchestrator.config import REGISTRY_DEFAULT, SERVE_DEPLOYMENT, ServeArgs, parse
from orchestrator.errors import ConfigError
from orchestrator.predictor import Predictor
from orchestrator.runtime import check_fits, embedded

APP_NAME = "orchestrator"
HISTORY = 10  # previous checkpoints kept for rollback


def build_app(args: ServeArgs):
    """The Serve app for a checkpoint: the import_path target of deploy/serve.yaml."""
    from orchestrator.endpoint import ModelServer

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
    from ray.serve.config import BackpressureConfig

    return {
        "user_config": {"args": args.model_dump(mode="json")},
        "autoscaling_config": args.autoscaling.model_dump(),
        "max_ongoing_requests": args.max_ongoing_requests,
        "max_queued_requests": args.max_queued_requests,
        "backpressure_config": BackpressureConfig(status_code=503, retry_after_s=args.retry_after_s),
        "ray_actor_options": {"num_cpus": args.num_cpus, "num_gpus": args.num_gpus},
        "health_check_period_s": args.health_check_period_s,
        "max_surge_percent": args.max_surge_percent,
        "graceful_shutdown_timeout_s": args.graceful_shutdown_timeout_s,
        "graceful_shutdown_wait_loop_s": args.graceful_shutdown_wait_loop_s,
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


def check_resources(args: ServeArgs) -> None:
    """A replica that the embedded Ray can never fit is refused before the deploy waits for it."""
    need = {k: v for k, v in {"CPU": args.num_cpus, "GPU": args.num_gpus}.items() if v}
    check_fits("each replica of the endpoint", need, "lower its num_cpus or num_gpus")


def check_auth(args: ServeArgs, host: str) -> None:
    """An endpoint beyond loopback needs API keys (unless auth is none); auth: required needs keys."""
    if args.auth != "none" and not is_loopback(host) and not read_api_keys(args):
        raise ConfigError(f"--host {host} exposes the endpoint beyond this machine: set API keys in "
                          f"${args.api_keys_env} (comma-separated) or api_keys_file first")
    ApiKeys(args)


def deploy(args: ServeArgs, *, name: str = APP_NAME, route_prefix: str = "/", host: str = "127.0.0.1",
           port: int = 8000, request_timeout_s: float | None = 30, timeout_s: float = 180,
           keep_history: bool = True, checked: Predictor | None = None) -> dict:
    """Deploy the app on the connected Ray, or update it in place if it runs; wait until it serves
    the new checkpoint. The checkpoint it replaces becomes the rollback target. `checked`: the
    predictor check_deployable already loaded for these args (not loaded twice)."""
    from ray import serve
    from ray.serve.schema import ServeDeploySchema

    args, predictor = (args, checked) if checked else check_deployable(args, host)
    check_resources(args)
    if embedded() and _client(required=False) is None:  # Serve starts here, on this machine
        check_port_free(host, port)
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
    apps[name] = {**apps[name], "deployments": [{"name": SERVE_DEPLOYMENT, **_json_options(args)}]}
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
    from ray import serve

    running_args(name)  # a clear error if it is not there
    serve.delete(name)
    return {"app": name, "deleted": True}


def _plain(value) -> str:
    return str(getattr(value, "value", value))  # Serve's status enums, as JSON-able text


def _client(required: bool = True):
    """The running Serve's controller client; None if Serve is not running and not `required`."""
    from ray.serve.context import (
        _get_global_client,  # what Ray's own `serve run CONFIG` deploys through
    )

    return _get_global_client(raise_if_no_controller_running=required)


def check_port_free(host: str, port: int) -> None:
    """Refuse a port that another program holds before Serve tries it (Ray would answer with a traceback
    from its proxy, whichever ingress it runs)."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is no conflict
        try:
            probe.bind((host, port))
        except OSError as e:
            raise ConfigError(f"cannot serve on {host}:{port}: {e.strerror}; choose another port (--port) "
                              "or stop what listens there") from None


def _args_of(app_config: dict | None) -> ServeArgs | None:
    """The settings an app runs with: its deployment override (set by updates), else its args."""
    if not app_config or app_config.get("import_path") != f"{__name__}:build_app":
        return None
    for d in app_config.get("deployments") or []:
        if d.get("name") == SERVE_DEPLOYMENT and isinstance(d.get("user_config"), dict) and "args" in d["user_config"]:
            return ServeArgs.model_validate(d["user_config"]["args"])
    return ServeArgs.model_validate(app_config.get("args") or {})


def _json_options(args: ServeArgs) -> dict:
    options = deployment_options(args)
    return {**options, "backpressure_config": options["backpressure_config"].model_dump()}


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host  # an IPv6 address goes in brackets in a URL


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
        # several consecutive answers with the new version: the ingress spreads them over replicas
        seen = seen + 1 if ready.get("version") == version and app.get("status") == "RUNNING" else 0
        if seen >= 3:
            return
        time.sleep(0.2)
    raise RuntimeError(f"{name} did not serve version {version} within {timeout_s:.0f}s; see `orchestrator serve "
                       "status` (a restart starts new replicas first: with no room for them, set max_surge_percent=0)")
