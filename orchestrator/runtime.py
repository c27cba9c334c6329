"""Joining a Ray cluster, or starting an embedded one on this machine."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading

from orchestrator.errors import ConfigError

# Ray Train 2.60 itself passes an option its Ray Data deprecates; the warning would reach the terminal
# from every run's dataset actor. This ignores that message only.
RAY_OWN_DEPRECATION = "ignore:`ExecutionOptions.exclude_resources` is deprecated:Warning"


def quiet_env(environ) -> dict[str, str]:
    """Environment for Ray's processes that keeps Ray's own chatter out of a run's output: Ray Data's
    INFO lines in the actors that feed the workers ("Dataset ... execution finished", its progress
    reports; once per split per run, nothing a user acts on; its warnings still show) and the
    deprecation above. What `environ` already sets is kept."""
    warnings = environ.get("PYTHONWARNINGS", "")
    if RAY_OWN_DEPRECATION not in warnings:
        warnings = ",".join(filter(None, [warnings, RAY_OWN_DEPRECATION]))
    return {"RAY_DATA_LOG_LEVEL": environ.get("RAY_DATA_LOG_LEVEL", "WARNING"), "PYTHONWARNINGS": warnings}


def ray_environment() -> None:
    """Ray's settings for this process and the Ray it starts (its processes inherit them). Ray reads
    some when it is first imported, so the CLI sets them before anything imports Ray; what the
    environment already sets is kept."""
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")  # dedup ignores numbers: it would merge the epoch lines of trials
    # Ray Train's controller collects each worker's report when it polls (every 2 s by default), and a
    # worker's next report waits for that: epochs shorter than the interval were paced at 2 s each.
    # Ray Train passes the variable from the driver to the controller, on a cluster too.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.25")
    os.environ.update(quiet_env(os.environ))


@contextlib.contextmanager
def ray_session(address: str | None = None):
    """Use the Ray already initialized in this process, join `address`, or start a local Ray.

    The embedded cluster listens on 127.0.0.1 only and, on Ray 2.60, has token auth on. Joining a
    cluster with token auth needs RAY_AUTH_MODE=token and the token (RAY_AUTH_TOKEN,
    RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token).
    """
    ray_environment()
    import ray

    if ray.is_initialized():
        yield ray
        return
    quiet = {"logging_level": logging.WARNING, "log_to_driver": True, "configure_logging": True}
    with contextlib.ExitStack() as stack:
        if address:
            try:
                _join(address, quiet)
            except ValueError as e:  # Ray's "Invalid address format"
                raise ConfigError(f"--address {address}: {e}; give the Ray head's host:port (e.g. 10.0.0.5:6379) "
                                  "or auto (the Ray running on this machine)") from None
            except ConnectionError as e:
                reason = str(e).splitlines()[0].rstrip(".")
                raise ConfigError(f"--address {address}: {reason}. Is the cluster up, and is this its address "
                                  "(auto: the Ray running on this machine)?") from None
        else:
            # One machine is never preempted: Ray Train's PreemptionWatcher would be one more actor per
            # fit, watching nothing, and print an error line about its own constructor in every run.
            os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
            stack.enter_context(_serve_ingress())
            # address="local": always a new cluster, never one that happens to run on this machine
            with _loopback_node(), _own_address():
                ray.init(address="local", include_dashboard=True, dashboard_host="127.0.0.1", **quiet)
        stack.callback(ray.shutdown)
        _quiet_ray_data()
        global _embedded
        _embedded = not address
        try:
            yield ray
        finally:
            _embedded = False


_embedded = False  # this process runs the embedded Ray it started


def embedded() -> bool:
    """Whether this process runs on the embedded Ray it started: one machine, no autoscaler."""
    return _embedded


def check_fits(what: str, need: dict[str, float], fix: str) -> None:
    """Refuse, on the embedded Ray, a request that it can never meet: its resources are this machine's
    and no autoscaler adds more, so Ray would wait for them forever. A cluster may add nodes for it
    (its autoscaler), so there the request is left to Ray."""
    if not _embedded:
        return
    import ray

    have = ray.cluster_resources()
    if any(amount > have.get(kind, 0) + 1e-9 for kind, amount in need.items()):
        raise ConfigError(f"{what} needs {_amounts(need)}, and the local Ray on this machine has "
                          f"{_amounts({k: have.get(k, 0) for k in need})}: {fix}, or run on a cluster (--address)")


def _amounts(resources: dict[str, float]) -> str:
    return " and ".join(f"{v:g} {k}{'' if v == 1 else 's'}" for k, v in resources.items())


def _join(address: str, quiet: dict) -> None:
    """ray.init(address), failing in seconds where Ray would retry for minutes. Ray rewrites a loopback
    address to the machine's network address; a Ray that listens on 127.0.0.1 only (another process's
    embedded Ray: `orchestrator serve` in one shell, `serve status --address auto` in the next) is
    reached on 127.0.0.1 instead, with the token Ray made for it."""
    import ray

    host, port = ("", "") if address.startswith("ray://") else _resolve(address, loopback_node=False)
    if not host or _answers(host, port):  # where Ray itself connects; Ray Client (ray://) goes to Ray as it is
        ray.init(address=address, **quiet)
        return
    local_host, local_port = _resolve(address, loopback_node=True)
    if local_host not in ("127.0.0.1", "localhost", "::1") or not _answers(local_host, local_port):
        raise ConnectionError(f"nothing answers at {local_host or host}:{local_port or port}.")
    if os.environ.get("RAY_AUTH_MODE") is None and _token_at_hand():
        from ray._private.authentication.authentication_token_setup import (
            _enable_token_auth,
        )

        _enable_token_auth()  # RAY_AUTH_MODE=token, and Ray's cached config refreshed to see it
    with _loopback_node():
        ray.init(address=address, **quiet)


def _resolve(address: str, loopback_node: bool) -> tuple[str, str]:
    """(host, port) that `address` (host:port, or auto: the Ray running on this machine) stands for,
    as Ray resolves it, or as a node on 127.0.0.1 does; ("", "") for other forms."""
    from ray._common.network_utils import parse_address
    from ray._private import services

    with _loopback_node() if loopback_node else contextlib.nullcontext():
        resolved = services.canonicalize_bootstrap_address(address)
    return (parse_address(resolved) if resolved else None) or ("", "")


def _answers(host: str, port: str) -> bool:
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
        return True
    except (OSError, ValueError):
        return False


def _token_at_hand() -> bool:
    path = os.environ.get("RAY_AUTH_TOKEN_PATH", os.path.expanduser("~/.ray/auth_token"))
    return bool(os.environ.get("RAY_AUTH_TOKEN")) or os.path.isfile(path)


@contextlib.contextmanager
def _serve_ingress():
    """Ray Serve's HAProxy ingress for the embedded Ray, on loopback only (orchestrator/ingress.py): set in
    the environment the Ray starts with, and taken back, with HAProxy's private directory, when it ends."""
    import shutil
    import tempfile

    from orchestrator import ingress

    workdir = tempfile.mkdtemp(prefix="haproxy-", dir="/tmp" if os.path.isdir("/tmp") else None)  # short: sockets
    try:
        with _environ(ingress.embedded_env(workdir)):
            yield
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _own_address():
    """The embedded Ray's GCS on a port chosen here, and RAY_ADDRESS naming it, in the environment that Ray starts
    with and its processes inherit (this process's is as it was once Ray has started). Ray Train's placement-group
    cleaner asks Ray's State API, from a worker, whether the run's controller lives, and that API finds its cluster
    by RAY_ADDRESS, else by the last `ray start` on the machine: with another Ray there, it asked that one, which
    knows no such controller, and could remove the run's placement group; with several, it died with a traceback
    ("Found multiple active Ray instances")."""
    from orchestrator.ingress import free_ports

    port = free_ports(1)[0]
    return _environ({"RAY_GCS_SERVER_PORT": str(port), "RAY_ADDRESS": f"127.0.0.1:{port}"})


@contextlib.contextmanager
def _environ(env: dict[str, str]):
    """`env` set in this process's environment, and what it replaced put back after."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _loopback_node():
    """Give the embedded node the IP 127.0.0.1, so that all its servers listen on loopback.

    Ray binds its gRPC servers (GCS, raylet, workers, agents) to every interface unless the
    node's IP is loopback, and on Linux it replaces a loopback IP that we pass with the
    machine's network address. Its single-machine mode (the default on macOS and Windows,
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0) keeps the node on 127.0.0.1: use it while the node
    starts. Ray passes the IP to every process it starts, so nothing else needs it.
    """
    from ray._private import ray_constants

    saved = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved


def _quiet_ray_data():
    """Ray Data announces every execution of every small dataset; keep the terminal for training progress.
    Datasets carry this context to the actors that run them (Ray Train's split coordinators): there,
    without Ray's tqdm, progress goes to Ray Data's log at INFO, under RAY_DATA_LOG_LEVEL, instead of
    a screenful of bars per split in the driver's output."""
    from ray.data import DataContext

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    context = DataContext.get_current()
    context.print_on_execution_start = False
    context.use_ray_tqdm = False


@contextlib.contextmanager
def restore_sigint():
    """Ray Train's fit() and Tune's fit() install their own Ctrl-C handlers and leave them installed
    after the run; put back the one we had, so Ctrl-C still stops what comes next (e.g. serving)."""
    handler = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        if threading.current_thread() is threading.main_thread():  # signal.signal works only there
            signal.signal(signal.SIGINT, handler)
