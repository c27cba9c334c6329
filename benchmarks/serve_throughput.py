"""The Serve endpoint against a plain uvicorn + FastAPI server, batching against none, latency.

    python benchmarks/serve_throughput.py                  # about 2 minutes on 2 CPU cores
    python benchmarks/serve_throughput.py --duration 1     # quick

Everything runs on this machine over loopback, the load generator included (it shares the
cores with the servers, as it would on any one-box measurement). One model, one checkpoint:
a classifier of 8x8 inputs (--model: a CNN, --channels, by default; a 2-layer LSTM over the
rows, --hidden-size; or a Transformer encoder over 2x2 patches, --d-model, --num-layers), served by
  (a) a plain uvicorn + FastAPI process running the endpoint's own app and replica code
      (orchestrator/endpoint.py) with one torch thread, against Serve with one replica of one CPU,
      both unbatched, at the same concurrency: serve_vs_uvicorn = Serve requests/s / uvicorn
      requests/s (goal >= 0.85). Both write an access-log line per request to a file (uvicorn's
      is on as uvicorn ships; Serve's replica writes its own to Ray's log files); the JSON's
      uvicorn_without_access_log and serve_vs_uvicorn_without_access_log give uvicorn without it;
  (b) Serve with @serve.batch against Serve unbatched at saturation (concurrency 64):
      batching_gain (goal >= 1.5);
  (c) latency p50/p99 of the batched endpoint at concurrency 1, 8 and 64.
Each measurement is a closed loop: `concurrency` clients, each sending its next request when
the previous one is answered, for --duration seconds after a warm-up. Prints one JSON line last.

What batching can gain depends on the model. Each request costs the server a fixed amount of
HTTP and framework work (about 2 ms of CPU per request in a replica here), which batching does
not share, plus the forward pass, which it does. The JSON's `model_alone` gives the forward
pass's time for 1 input and per input in a batch of 32 (one torch thread, measured in the same
run), and its `batching_bound` the gain batching could give if the per-request work were free.

Serve runs as `orchestrator serve` runs it on the embedded Ray: behind HAProxy, which sends each
request straight to a replica's own HTTP server (orchestrator/ingress.py), where Ray ships HAProxy
(Linux). --serve-proxy measures Serve's Python HTTP proxy instead (RAY_SERVE_ENABLE_HA_PROXY=0).
The JSON's `ingress` says which one ran.
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).parents[1]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_checkpoint(path: str, model: dict) -> str:
    """An untrained checkpoint: serving cost does not depend on what the weights learned."""
    import torch

    from orchestrator.checkpoint import write_checkpoint
    from orchestrator.config import config_from_dict
    from orchestrator.models import build_model

    cfg = config_from_dict({"name": "bench", "data": {"name": "digits"},
                            "model": model})
    torch.manual_seed(0)
    info = {"input_shape": [1, 8, 8], "label_names": [str(i) for i in range(10)], "normalization": {},
            "data_fingerprint": "none"}
    write_checkpoint(path, model=build_model(cfg.model, info["input_shape"], 10), config=cfg, model_info=info,
                     metrics={})
    return path


async def load(url: str, body: bytes, concurrency: int, duration: float, warmup: float) -> dict:
    """Closed-loop load: requests/s, latency percentiles (ms), and every status seen."""
    import aiohttp

    latencies, statuses = [], {}
    start = time.perf_counter()
    measure_from, end = start + warmup, start + warmup + duration

    async def client(session):
        while (now := time.perf_counter()) < end:
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                await r.read()
                done = time.perf_counter()
                if now >= measure_from:
                    latencies.append(done - now)
                    statuses[r.status] = statuses.get(r.status, 0) + 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
    ms = sorted(1000 * t for t in latencies)
    return {
        "concurrency": concurrency,
        "requests_per_s": round(statuses.get(200, 0) / duration, 1),
        "p50_ms": round(ms[len(ms) // 2], 2) if ms else None,
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2) if ms else None,
        "statuses": statuses,
    }


def measure(url, body, concurrency, args) -> dict:
    return asyncio.run(load(url, body, concurrency, args.duration, args.warmup))


def forward_ms(checkpoint: str, seconds: float = 2) -> dict:
    """The model's forward pass alone, one torch thread: ms for 1 input, and per input in a batch of 32."""
    import torch

    from orchestrator.predictor import Predictor

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    predictor = Predictor.load(checkpoint)
    per_call = {}
    for n in (1, 32):
        x = np.zeros((n, *predictor.input_shape), dtype=np.float32)
        predictor.predict(x)
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            predictor.predict(x)
            calls += 1
        per_call[n] = (time.perf_counter() - start) / calls * 1000
    torch.set_num_threads(threads)
    return {"batch_1_ms": round(per_call[1], 3), "per_input_in_batch_32_ms": round(per_call[32] / 32, 4),
            "batching_bound": round(per_call[1] / (per_call[32] / 32), 2)}


def uvicorn_server(checkpoint: str, port: int, access_log: str) -> None:
    """The baseline: the endpoint's own FastAPI app and replica code (orchestrator/endpoint.py: auth, limits,
    decode, predict, encode, unbatched) in one plain uvicorn process, one torch thread; Serve is all that differs.
    `access_log`: the file of uvicorn's access log, or "-" for none."""
    import contextlib

    import torch
    import uvicorn
    from fastapi import FastAPI, Request

    from orchestrator.config import ServeArgs
    from orchestrator.endpoint import Cors, Endpoint

    torch.set_num_threads(1)
    endpoint = Endpoint()

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await endpoint.reconfigure({"args": ServeArgs(checkpoint=checkpoint, max_batch_size=1).model_dump(mode="json")})
        yield

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(Cors)

    @app.post("/v1/predict")
    async def predict(request: Request):
        return await endpoint.predict(request)

    if access_log == "-":
        return uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
    # uvicorn's access log, on as uvicorn ships it, goes to a file, as Serve's replica writes its own to
    # Ray's log files; uvicorn's other lines below WARNING are left out
    log_config = {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"access": {"()": "uvicorn.logging.AccessFormatter",
                                  "fmt": '%(asctime)s %(client_addr)s - "%(request_line)s" %(status_code)s'}},
        "handlers": {"access": {"class": "logging.FileHandler", "formatter": "access", "filename": access_log}},
        "loggers": {"uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False}},
    }
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=log_config)


def measure_uvicorn(checkpoint: str, access_log: str, body: bytes, args) -> dict:
    """The baseline (uvicorn_server) in its own process, alone on the machine, at args.concurrency."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, __file__, "--uvicorn-server", checkpoint, str(port), access_log],
                            cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        wait_up(f"http://127.0.0.1:{port}/v1/predict")
        return measure(f"http://127.0.0.1:{port}/v1/predict", body, args.concurrency, args)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wait_up(url: str, timeout_s: float = 60) -> None:
    import urllib.request

    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError as e:
            if getattr(e, "code", None):  # an HTTP answer, even 404/405: the server is up
                return
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout_s}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=8, help="seconds measured per point")
    parser.add_argument("--warmup", type=float, default=2, help="seconds before each measurement")
    parser.add_argument("--concurrency", type=int, default=8, help="clients for the uvicorn comparison")
    parser.add_argument("--instances", type=int, default=8, help="inputs per request in the uvicorn comparison")
    parser.add_argument("--model", choices=["cnn", "rnn", "transformer"], default="cnn", help="the model served")
    parser.add_argument("--channels", type=int, nargs=2, default=[64, 128], help="the CNN's channels")
    parser.add_argument("--hidden-size", type=int, default=256, help="the LSTM's hidden size (2 layers)")
    parser.add_argument("--d-model", type=int, default=128, help="the Transformer's width")
    parser.add_argument("--num-layers", type=int, default=4, help="the Transformer's encoder layers")
    parser.add_argument("--batch-wait-ms", type=float, default=2, help="@serve.batch's wait for a batch to fill")
    parser.add_argument("--serve-proxy", action="store_true",
                        help="Serve's Python HTTP proxy as the ingress, not HAProxy")
    parser.add_argument("--uvicorn-server", nargs=3, metavar=("CHECKPOINT", "PORT", "ACCESS_LOG"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.batch_wait_ms < 0:  # before minutes of measurement, not after
        parser.error(f"--batch-wait-ms must be at least 0, got {args.batch_wait_ms:g}")
    if args.uvicorn_server:
        return uvicorn_server(args.uvicorn_server[0], int(args.uvicorn_server[1]), args.uvicorn_server[2])

    if args.serve_proxy:  # read when Ray starts; its processes inherit it
        os.environ["RAY_SERVE_ENABLE_HA_PROXY"] = "0"
    from orchestrator import serve
    from orchestrator.config import ServeArgs
    from orchestrator.runtime import ray_session

    rng = np.random.default_rng(0)
    request = lambda n: json.dumps({"instances": rng.normal(size=(n, 1, 8, 8)).round(3).tolist()}).encode()
    several, one = request(args.instances), request(1)
    model = {
        "cnn": {"name": "cnn", "channels": args.channels, "hidden_size": 128},
        "rnn": {"name": "rnn", "cell": "lstm", "hidden_size": args.hidden_size, "num_layers": 2},
        "transformer": {"name": "transformer", "d_model": args.d_model, "num_layers": args.num_layers,
                        "num_heads": 4, "ff_size": 2 * args.d_model},
    }[args.model]
    out = {"benchmark": "serve_throughput", "model": model, "instances_per_request": args.instances,
           "duration_s": args.duration}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = make_checkpoint(f"{tmp}/ckpt", model)
        out["model_alone"] = forward_ms(ckpt, seconds=min(2.0, args.duration))
        print("model alone:", out["model_alone"], flush=True)

        # (a) plain uvicorn first, alone on the machine: with its access log, as Serve keeps one, and
        # without, for reference
        plain = measure_uvicorn(ckpt, f"{tmp}/uvicorn-access.log", several, args)
        print("uvicorn:", plain, flush=True)
        quiet = measure_uvicorn(ckpt, "-", several, args)
        print("uvicorn, no access log:", quiet, flush=True)

        with ray_session():
            out["ingress"] = "haproxy" if os.environ.get("RAY_SERVE_ENABLE_HA_PROXY") == "1" else "proxy"
            http = {"host": "127.0.0.1", "port": free_port(), "request_timeout_s": 60}
            fixed = {"autoscaling": {"min_replicas": 1, "max_replicas": 1}, "num_cpus": 1, "max_ongoing_requests": 128,
                     "max_queued_requests": 1024}
            def deploy(**settings) -> str:  # the same app each time: a new batch size applies in place
                args = ServeArgs.model_validate({"checkpoint": ckpt, **fixed, **settings})
                return serve.deploy(args, name="bench", route_prefix="/bench", **http)["url"] + "/v1/predict"

            unbatched = deploy(max_batch_size=1)
            served = measure(unbatched, several, args.concurrency, args)
            print("serve, unbatched:", served, flush=True)
            unbatched_64 = measure(unbatched, one, 64, args)
            print("serve, unbatched, 1 input x 64 clients:", unbatched_64, flush=True)

            batched = deploy(max_batch_size=32, batch_wait_timeout_s=args.batch_wait_ms / 1000)
            latency = {c: measure(batched, one, c, args) for c in (1, 8, 64)}
            print("serve, batched:", latency, flush=True)

    ratio = lambda a, b: round(a["requests_per_s"] / b["requests_per_s"], 4) if b["requests_per_s"] else None
    out.update({
        "serve_vs_uvicorn": ratio(served, plain),
        "serve_vs_uvicorn_without_access_log": ratio(served, quiet),  # Serve still logs: an unequal pair
        "batching_gain": ratio(latency[64], unbatched_64),
        "latency_ms": {str(c): {"p50": r["p50_ms"], "p99": r["p99_ms"], "requests_per_s": r["requests_per_s"]}
                       for c, r in latency.items()},
        "uvicorn": plain, "uvicorn_without_access_log": quiet, "serve_unbatched": served, "serve_unbatched_c64": unbatched_64,
        "serve_batched": {str(c): r for c, r in latency.items()},
    })
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
