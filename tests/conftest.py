"""Shared fixtures: an S3-protocol server on loopback and one local Ray cluster per test session."""

import os
import random
import signal
import socket
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
MARKER = f"pytest-{uuid.uuid4().hex[:10]}"  # in the environment of every process this session starts


def free_port() -> int:
    """A free port on loopback that no process is handed later by the system.

    A port the system gives to `bind(0)` is free now, but it may give it again to the next process that asks, and
    a Ray that starts after this returns asks for many (its gRPC servers): once, Serve's HTTP proxy found its port
    taken by one. So draw from below the system's ephemeral range and above Ray's worker ports (10002-19999).
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):  # not Linux: the system's choice
        low = 0
    rng = random.Random()
    for _ in range(200 if low > 20100 else 0):
        port = rng.randrange(20000, low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server on 127.0.0.1; the AWS variables are set before Ray starts so workers inherit them."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_REGION="us-east-1",
                      AWS_ENDPOINT_URL=endpoint, AWS_EC2_METADATA_DISABLED="true")
    yield endpoint
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint):
    import boto3

    name = f"test-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def ray_cluster(s3_endpoint):
    """One local Ray (2 CPUs, loopback, token auth as Ray 2.60 sets it) shared by the session's Ray tests."""
    import ray

    from orchestrator.runtime import ray_session

    os.environ["ORCHESTRATOR_TEST_MARKER"] = MARKER  # Ray's processes inherit it: teardown can find them
    with ray_session():
        yield ray
    kill_marked(MARKER)  # whatever outlived ray.shutdown(), and only what this session started


def marked_pids(marker: str) -> list[int]:
    """PIDs of processes whose environment carries ORCHESTRATOR_TEST_MARKER=marker."""
    needle = f"ORCHESTRATOR_TEST_MARKER={marker}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if needle in (proc / "environ").read_bytes().split(b"\0"):
                    pids.append(int(proc.name))
            except OSError:
                pass
    return pids


def kill_marked(marker: str, timeout_s: float = 10) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in marked_pids(marker):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + timeout_s
        while marked_pids(marker) and time.time() < deadline:
            time.sleep(0.2)


def http(method: str, url: str, body=None, headers: dict | None = None, timeout: float = 30):
    """One HTTP request on loopback: (status, headers, parsed JSON or text). `body` may be an
    iterable of bytes chunks, sent with chunked transfer encoding (no Content-Length)."""
    import http.client
    import json
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        chunked = body is not None and not isinstance(body, (bytes, str))
        conn.request(method, parts.path or "/", body=body, headers=headers or {}, encode_chunked=chunked)
        resp = conn.getresponse()
        raw = resp.read()
    finally:
        conn.close()
    try:
        content = json.loads(raw)
    except ValueError:
        content = raw.decode(errors="replace")
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, content


def png_bytes(pixels) -> bytes:
    """A PNG file of uint8 pixels, as a table's column of image files holds it."""
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "PNG")
    return out.getvalue()


def form(*parts) -> tuple[bytes, str]:
    """A multipart/form-data body of (field, file name or None, Content-Type or None, bytes), as curl -F sends."""
    boundary, body = "----orchestrator-test-7f3a", b""
    for field, filename, content_type, data in parts:
        body += (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"'
                 + (f'; filename="{filename}"' if filename else "") + "\r\n"
                 + (f"Content-Type: {content_type}\r\n" if content_type else "") + "\r\n").encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"
