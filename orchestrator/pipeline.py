"""`orchestrator run`: data in, a served model out, and where it came from.

    orchestrator run jobs/digits.yaml                        # embedded Ray; serves until Ctrl-C
    orchestrator run jobs/digits.yaml --exit-after-smoke --json
    orchestrator submit jobs/digits.yaml --address URL run   # the same on a cluster

search (if the config has a tune section) -> final training with the best values -> test
evaluation and report -> registry version (alias candidate) -> gated promotion to
production -> the production version served -> one smoke request with real test inputs.
"""

from __future__ import annotations

import json
import time
from typing import NamedTuple

import numpy as np

from orchestrator import byte_text, data, registry, report, serve, storage, tracking
from orchestrator.auth import read_api_keys
from orchestrator.client import post_json
from orchestrator.config import ExperimentConfig, ServeArgs, config_from_dict, parse, with_searched_values
from orchestrator.loop import say
from orchestrator.models import model_for

SMOKE_INSTANCES = 4


def registry_root(cfg: ExperimentConfig) -> str:
    return cfg.registry.path or storage.join(cfg.storage.path, "registry")


class Checked(NamedTuple):
    """What check() found and run() uses: the endpoint's args, and the data."""

    args: ServeArgs
    splits: data.Splits


def check(cfg: ExperimentConfig, host: str, port: int | None = None) -> Checked:
    """Everything that can be checked before Ray starts (exit 2, nothing done): storage and
    registry writable, serve settings and keys, the endpoint's `port` free (when Serve will run on
    this machine), tracking installed, the data readable and the model fitting it."""
    st = cfg.storage
    storage.check_writable(st.path, st.endpoint_url, st.region, mark=True)
    storage.check_writable(registry_root(cfg), st.endpoint_url, st.region, mark=True)
    tracking.check_mlflow(cfg)
    model = cfg.registry.model_name or cfg.name
    args = parse(ServeArgs, {**cfg.serve, "checkpoint": f"models:/{model}@{registry.PRODUCTION}",
                             "registry": registry.Registry(registry_root(cfg)).root,
                             "storage_endpoint_url": st.endpoint_url}, source="serve")
    serve.check_auth(args, host)
    if port is not None:
        serve.check_port_free(host, port)
    splits = data.load_splits(cfg.data, cfg.seed, st.endpoint_url)
    # a ConfigError if it does not fit
    model_for(cfg.model, splits.info())
    return Checked(args, splits)


def final_config(cfg: ExperimentConfig, best: dict) -> ExperimentConfig:
    """The config as written, with the search's best values, for the final training."""
    raw = with_searched_values({k: v for k, v in cfg.to_dict().items() if k != "tune"}, best)
    return config_from_dict(raw, source="final config")


def run(cfg: ExperimentConfig, *, address: str | None = None, host: str = "127.0.0.1", port: int = 8000,
        request_timeout_s: float = 30, app: str = serve.APP_NAME, route_prefix: str = "/",
        checked: Checked | None = None) -> dict:
    """The whole pipeline on the connected (or an embedded) Ray; the summary. The endpoint keeps
    running when this returns, for as long as Ray does. `checked`: what check() returned, if called."""
    from orchestrator.runtime import ray_session
    from orchestrator.train import check_resources as check_training
    from orchestrator.train import train
    from orchestrator.tune import check_resources as check_search
    from orchestrator.tune import tune

    args, splits = checked or check(cfg, host, None if address else port)
    started = time.time()
    model = cfg.registry.model_name or cfg.name
    reg = registry.Registry(registry_root(cfg), cfg.storage.endpoint_url, cfg.storage.region)
    steps = 5 if cfg.tune else 4
    step = iter(range(1, steps + 1))
    with ray_session(address):
        # every step's resources before the first: not a search whose result could not be trained or served
        if cfg.tune:
            check_search(cfg)
        check_training(cfg)
        serve.check_resources(args)
        searched, final = None, cfg
        if cfg.tune:
            say(f"[{next(step)}/{steps}] search: {cfg.tune.num_samples} trials, scheduler {cfg.tune.scheduler.name}")
            tuned = tune(cfg, splits=splits)
            final = final_config(cfg, tuned.best_config)
            searched = {"experiment": tuned.experiment, "best_config": tuned.best_config, "best_trial": tuned.best_trial,
                        "num_trials": tuned.num_trials, "num_stopped_early": tuned.num_stopped_early,
                        "num_failed": tuned.num_failed, "time_budget_reached": tuned.time_budget_reached,
                        "best_val_metric": tuned.best_metrics.get(cfg.tune.metric), "plots": tuned.plots}
            shown = {k: float(f"{v:.3g}") if isinstance(v, float) else v for k, v in tuned.best_config.items()}
            say(f"best of {tuned.outcome()}: {json.dumps(shown)}")
        say(f"[{next(step)}/{steps}] final training: {final.train.epochs} epochs, {final.train.num_workers} worker(s)")
        search_lineage = {"search": searched["experiment"], "search_trial": searched["best_trial"]} if searched else {}
        trained = train(final, splits=splits, lineage_extra=search_lineage, report_extra={"search": searched})

        say(f"[{next(step)}/{steps}] registry {reg.root}")
        record = reg.register(model, trained.checkpoint, metrics=trained.metrics, gates=registry.gates(cfg.registry),
                              source={"run": trained.run, "run_uri": trained.run_uri, "report": trained.report},
                              checkpoint_endpoint_url=cfg.storage.endpoint_url)
        promotion = reg.promote(model, record["version"]) if cfg.registry.promote else None
        say(_promotion_line(model, record["version"], promotion))
        production = reg.aliases(model)["aliases"].get(registry.PRODUCTION)
        if production is None:
            raise RuntimeError(f"{model} v{record['version']} did not pass the promotion gates and no earlier version "
                               f"is in production, so there is nothing to serve; see: orchestrator models show "
                               f"{record['version']} --registry {reg.root}")

        say(f"[{next(step)}/{steps}] serving models:/{model}@production (v{production})")
        deployed = serve.deploy(args, name=app, route_prefix=route_prefix, host=host, port=port,
                                request_timeout_s=request_timeout_s)
        if cfg.model.name == "gpt":
            say(f"[{next(step)}/{steps}] smoke request: a test prompt to {deployed['url']}/v1/generate")
            smoke = smoke_generate(deployed["url"], splits.arrays["test"], args)
        else:
            say(f"[{next(step)}/{steps}] smoke request: {SMOKE_INSTANCES} test inputs to {deployed['url']}/v1/predict")
            smoke = smoke_request(deployed["url"], splits.arrays["test"], args, texts=splits.input_dtype == "int64")
    served = reg.resolve(model, production)  # the new version, or production as it was if refused
    return {
        "model": model,
        "model_version": production,
        "registered_version": record["version"],
        "promotion": promotion,
        "endpoint": deployed["url"],
        "weights_version": deployed["version"],
        "metrics": served["metrics"],
        "importance": trained.importance,
        "baseline": trained.baseline,
        "lineage": served["lineage"],
        "report": trained.report,
        "smoke": smoke,
        "run": trained.run,
        "checkpoint": record["checkpoint"],
        "registry": reg.root,
        "search": {k: v for k, v in searched.items() if k != "plots"} if searched else None,
        "mlflow_run_id": trained.mlflow_run_id,
        "duration_s": round(time.time() - started, 1),
    }


def _promotion_line(model: str, version: int, promotion: dict | None) -> str:
    if promotion is None:
        return f"registered {model} v{version} as candidate (registry.promote is false: not promoted)"
    if promotion["promoted"]:
        return f"registered {model} v{version}; promoted to production (was {promotion['previous'] or 'none'})"
    return (f"registered {model} v{version} as candidate; NOT promoted: {'; '.join(promotion['reasons'])}. "
            f"production stays v{promotion['previous']}" if promotion["previous"] else
            f"registered {model} v{version} as candidate; NOT promoted: {'; '.join(promotion['reasons'])}")


def smoke_generate(url: str, test_split: tuple[np.ndarray, np.ndarray], args: ServeArgs) -> dict:
    """The start of a test sequence as a prompt: the endpoint must continue it with as many bytes as asked."""
    prompt = bytes(np.asarray(test_split[0][0][:32], dtype=np.uint8))
    keys = read_api_keys(args)
    tick = time.perf_counter()
    asked = min(64, args.max_new_tokens)
    status, answer = post_json(f"{url}/v1/generate", {"prompt": prompt.decode(errors="replace"), "max_new_tokens": asked,
                                                      "seed": 0}, api_key=keys[0] if keys else None, timeout_s=60)
    if status != 200 or answer.get("num_new_tokens") != asked:
        raise RuntimeError(f"the smoke request to {url}/v1/generate answered {status}: {answer}")
    latency_ms = (time.perf_counter() - tick) * 1e3
    say(f"answered {status} in {latency_ms:.0f} ms: {answer['prompt']!r} -> {answer['completion']!r}")
    return {"url": f"{url}/v1/generate", "status": status, "latency_ms": round(latency_ms, 1), "response": answer}


def smoke_request(url: str, test_split: tuple[np.ndarray, np.ndarray], args: ServeArgs,
                  texts: bool = False) -> dict:
    """A few real test inputs through the endpoint over HTTP; the response, and whether it holds up.
    `texts`: the inputs are the bytes of texts (data.text_column), sent as the strings a client sends."""
    x, y = test_split
    rows = _varied(y[:256], SMOKE_INSTANCES)
    inputs, truth = x[rows], y[rows]
    instances = [byte_text.decode(row) for row in inputs] if texts else inputs.tolist()
    if inputs.ndim == 2 and not texts:  # a table's blank cell as a client sends it: null
        instances = [[None if v != v else v for v in row] for row in instances]  # v != v: NaN
    keys = read_api_keys(args)
    tick = time.perf_counter()
    status, answer = post_json(f"{url}/v1/predict", {"instances": instances},
                               api_key=keys[0] if keys else None, timeout_s=30)
    if status != 200:
        raise RuntimeError(f"the smoke request to {url}/v1/predict answered {status}: {answer}")
    latency_ms = (time.perf_counter() - tick) * 1e3
    predictions = answer.get("predictions", [])
    if len(predictions) != len(truth):
        raise RuntimeError(f"the smoke request sent {len(truth)} inputs and got {len(predictions)} predictions")
    labels = answer["labels"]
    expected = [labels[int(label)] for label in truth]
    correct = sum(p["label"] == e for p, e in zip(predictions, expected))
    say(f"answered {status} in {latency_ms:.0f} ms: {[p['label'] for p in predictions]} (true {expected})")
    return {"url": f"{url}/v1/predict", "status": status, "latency_ms": round(latency_ms, 1),
            "expected_labels": expected, "correct": correct, "response": answer}


def _varied(labels: np.ndarray, n: int) -> list[int]:
    """n row indices, as many classes among them as there are: the first row of each class, then the rest."""
    firsts = sorted(np.unique(labels, return_index=True)[1][:n].tolist())
    return firsts + [i for i in range(len(labels)) if i not in firsts][: n - len(firsts)]


def _try(result: dict) -> str:
    return "generate --prompt TEXT" if "test_perplexity" in result["metrics"] else "predict --input FILE"


def print_summary(result: dict) -> None:
    m, lin = result["metrics"], result["lineage"]
    served_new = result["model_version"] == result["registered_version"]  # else production stayed as it was
    beside = [report.beside_baseline(m.get("test_accuracy"), result["baseline"]),
              report.relied_on(result["importance"])] if served_new else []
    say(f"\nmodel {result['model']} v{result['model_version']} (weights {result['weights_version']}) at "
        f"{result['endpoint']}\n"
        f"{report.headline(m)}\n"
        + "".join(f"{line}\n" for line in beside if line) +
        f"lineage: config {lin['config_hash'][:12]}  data {lin['data_fingerprint'][:12]}  code {lin['code_version']}\n"
        f"report {result['report']}\n"
        f"try: orchestrator {_try(result)} {result['endpoint']}   docs: {result['endpoint']}/docs\n"
        f"     orchestrator models list --registry {result['registry']}")

