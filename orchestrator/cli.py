"""The command line: a thin layer over the Python API.

    orchestrator run jobs/digits.yaml [section.field=value ...] [--exit-after-smoke] [--address ADDR] [--json]
    orchestrator train jobs/digits-cnn.yaml [section.field=value ...] [--address ADDR] [--json]
    orchestrator tune jobs/digits-tune.yaml [section.field=value ...] [--resume] [--address ADDR] [--json]
    orchestrator evaluate CHECKPOINT_URI [--split test | --data URI] [--json]
    orchestrator serve CHECKPOINT_URI [field=value ...] [--host H --port P] [--address ADDR] [--json]
    orchestrator serve status|rollback|shutdown --address ADDR
    orchestrator predict URL|CHECKPOINT_URI --input FILE|- [--output FILE] [--json]
    orchestrator generate URL|CHECKPOINT_URI --prompt TEXT [--max-new-tokens N] [--temperature T] [--seed S] [--json]
    orchestrator export CHECKPOINT_URI DESTINATION_URI
    orchestrator models list|show|promote|rollback [VERSION|ALIAS] [--registry URI] [--model NAME] [--address ADDR]
    orchestrator cluster validate|up|down|dashboard|attach cluster/aws-gpu.yaml
    orchestrator submit jobs/digits-cnn.yaml [field=value ...] --address URL [train|tune|run] [--wait]
    orchestrator status|logs|stop JOB_ID --address URL;  orchestrator list --address URL

Exit codes: 0 done, 1 the work failed, 2 bad input (the message says what to change).
"""

from __future__ import annotations

import argparse
import codecs
import json
import os
import posixpath
import signal
import sys
import time
from collections import Counter
from pathlib import Path

from orchestrator.config import REGISTRY_DEFAULT
from orchestrator.errors import ConfigError, UserError
from orchestrator.runtime import ray_environment


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # positionals may follow options (`submit CONFIG --address URL run`), which argparse leaves over
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides += extra
    ray_environment()  # before any command imports Ray
    try:
        result = args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the work itself failed: say so in one line, keep the details in Ray's logs
        if type(e).__name__ in ("TrainingFailedError", "RayTaskError", "RaySystemError", "RuntimeError", "JobFailed"):
            print(f"error: {type(e).__name__}: {str(e).strip().splitlines()[0]}", file=sys.stderr)
            return 1
        raise
    if args.json:
        print(json.dumps(result, sort_keys=True), flush=True)
    return 0


def _versions() -> str:
    """This package's version and those of what it runs on, as a bug report wants them (read from the installed
    packages' metadata: importing Ray and torch would take seconds)."""
    from importlib.metadata import PackageNotFoundError, version

    from orchestrator import __version__

    def installed(name: str) -> str:
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            return f"{name} not installed"

    return (f"orchestrator {__version__} ({', '.join(installed(n) for n in ('ray', 'torch'))}, "
            f"python {sys.version.split()[0]})")


def _parser() -> argparse.ArgumentParser:
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")
    common = argparse.ArgumentParser(add_help=False, parents=[output])
    common.add_argument("--address", help="Ray cluster to join (e.g. auto, 10.0.0.5:6379); default: embedded local Ray")

    parser = argparse.ArgumentParser(prog="orchestrator", description="Train, tune and serve PyTorch models on Ray.")
    parser.add_argument("--version", action="version", version=_versions())
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("train", parents=[common], help="train a model with Ray Train")
    p.add_argument("config", help="experiment YAML, e.g. jobs/digits-cnn.yaml; or the data itself (a table file, a "
                   "folder of images or texts), trained with a model for its kind and every other default")
    p.add_argument("overrides", nargs="*", help="section.field=value, e.g. train.num_workers=4 optim.lr=0.01")
    p.set_defaults(func=_train)

    p = sub.add_parser("tune", parents=[common], help="search hyperparameters with Ray Tune")
    p.add_argument("config", help="experiment YAML with a tune section, e.g. jobs/digits-tune.yaml")
    p.add_argument("overrides", nargs="*", help="section.field=value, e.g. tune.num_samples=20")
    p.add_argument("--resume", action="store_true", help="continue the latest interrupted search of this config")
    p.set_defaults(func=_tune)

    p = sub.add_parser("run", parents=[common], help="the whole pipeline: tune, train, register, serve, smoke test",
                       description="Search (if the config has a tune section), train with the best values, test, "
                       "register and promote the model, serve it and send a smoke request; then serve until Ctrl-C "
                       "(embedded Ray) or leave it running on the cluster (--address).")
    p.add_argument("config", help="experiment YAML, e.g. jobs/digits.yaml; or the data itself (a table file, a "
                   "folder of images or texts): train, register and serve with the defaults, no search")
    p.add_argument("overrides", nargs="*", help="section.field=value, e.g. tune.num_samples=20")
    p.add_argument("--exit-after-smoke", action="store_true", help="stop after the smoke request (scripts, CI)")
    p.add_argument("--host", default="127.0.0.1", help="address the endpoint binds (non-loopback needs API keys)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--name", default="orchestrator", help="Serve application name")
    p.set_defaults(func=_run)

    p = sub.add_parser("models", parents=[common], help="the model registry: list, show, promote, rollback",
                       description="Versions of registered models and their aliases. promote and rollback move an "
                       "alias; with --address, endpoints serving models:/NAME@ALIAS follow (rolling update).")
    p.add_argument("action", choices=["list", "show", "promote", "rollback"])
    p.add_argument("ref", nargs="?", help="version (3 or v3) or alias (production); show defaults to production")
    p.add_argument("--registry", default=REGISTRY_DEFAULT, help="registry root: directory or s3:// URI")
    p.add_argument("--model", help="model name; default the only model in the registry")
    p.add_argument("--alias", default="production", help="alias that promote/rollback move")
    p.add_argument("--force", action="store_true", help="promote even if the gates refuse (recorded in the log)")
    p.set_defaults(func=_models)

    p = sub.add_parser("evaluate", parents=[output], help="evaluate a checkpoint on a data split (in this process, "
                       "without Ray)")
    p.add_argument("checkpoint", help="checkpoint directory or s3:// URI")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--split", choices=["train", "val", "test"], default="test",
                       help="a split of the data the checkpoint was trained on")
    which.add_argument("--data", metavar="URI", help="other labelled data: Parquet, CSV, TSV, JSON Lines, Feather or "
                       "NPZ (path or s3://) with the training data's label and feature columns")
    p.add_argument("--encoding", type=_encoding, help="the text encoding of a CSV or TSV --data file, such as "
                   "cp1252 (default: the training data's, data.encoding)")
    p.add_argument("--sheet", help="the sheet of an Excel --data workbook to read (default: the training data's, "
                   "data.sheet, else the first)")
    p.add_argument("--image-dir", help="the folder of the image files that a column of the --data table names "
                   "(default: the training data's data.image_dir, in the --data file's folder)")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("serve", parents=[common], help="serve a checkpoint as an HTTP endpoint with Ray Serve",
                       description="Deploy a checkpoint (locally: until Ctrl-C; with --address: to the cluster, "
                       "as a rolling update if the app runs), or manage the running app.")
    p.add_argument("target", metavar="CHECKPOINT_URI|status|rollback|shutdown")
    p.add_argument("overrides", nargs="*", help="serve setting=value (deploy/serve.yaml's args), e.g. max_batch_size=64")
    p.add_argument("--host", default="127.0.0.1", help="address the endpoint binds (non-loopback needs API keys)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--request-timeout-s", type=float, default=30, help="answer 408 after this many seconds")
    p.add_argument("--name", default="orchestrator", help="Serve application name")
    p.add_argument("--route-prefix", default="/")
    p.set_defaults(func=_serve)

    p = sub.add_parser("predict", parents=[common], help="predictions from an endpoint URL or a checkpoint")
    p.add_argument("target", metavar="URL|CHECKPOINT_URI")
    p.add_argument("--input", required=True, help='JSON file ({"instances": [...]} or a list of inputs), - for '
                   "stdin, a table file with a header: CSV, TSV, Parquet, JSON Lines, Feather, Excel (.xlsx: see "
                   "--sheet), an NPZ of arrays, or a directory of them (a row per input, by column name), or an "
                   "image file or a directory of them (the model decodes them as in training); a local path, s3://, "
                   "gs:// or an https:// URL of a file")
    p.add_argument("--output", metavar="FILE", help="write the inputs and their predictions to this table file "
                   "(.csv, .tsv, .jsonl, .json, .parquet, .feather, .xlsx; local, s3:// or gs://): each input's row "
                   "(or its text, or its file), then its prediction, probability and a probability_<class> per class")
    p.add_argument("--columns", type=_names, help="the --output file's columns, in order, from the input's "
                   "columns and prediction, probability and probability_<class>; the training's label column names "
                   "the prediction (--columns PassengerId,Survived: a Kaggle submission)")
    p.add_argument("--encoding", type=_encoding, help="the text encoding of a CSV, TSV or .txt --input file, such "
                   "as cp1252 (Excel on Windows); default: a checkpoint's training data's (data.encoding), else UTF-8")
    p.add_argument("--sheet", help="the sheet of an Excel --input workbook to read; default: a checkpoint's "
                   "training data's (data.sheet), else the first")
    p.add_argument("--image-dir", help="the folder of the image files that a column of the --input table names "
                   "(Kaggle's test/ beside test.csv); default: a checkpoint's training data's (data.image_dir), in "
                   "the --input file's folder")
    p.add_argument("--api-key-env", default="ORCHESTRATOR_API_KEY", help="environment variable holding the API key")
    p.set_defaults(func=_predict)

    p = sub.add_parser("generate", parents=[common], help="text from a language model: an endpoint URL or a checkpoint")
    p.add_argument("target", metavar="URL|CHECKPOINT_URI")
    p.add_argument("--prompt", required=True, help="text to continue")
    p.add_argument("--max-new-tokens", type=int, default=200, help="bytes to generate")
    p.add_argument("--temperature", type=float, default=0.8, help="0: always the most likely byte")
    p.add_argument("--top-k", type=int, default=50, help="sample among the k most likely bytes (0: all)")
    p.add_argument("--seed", type=int, help="the same seed, prompt and model give the same text")
    p.add_argument("--api-key-env", default="ORCHESTRATOR_API_KEY", help="environment variable holding the API key")
    p.set_defaults(func=_generate)

    p = sub.add_parser("export", parents=[common], help="a checkpoint's model as a plain serving checkpoint",
                       description="Join a sharded (FSDP) checkpoint into one model.safetensors, without the "
                       "optimizer state: what serving and the registry need, in one file.")
    p.add_argument("checkpoint", help="checkpoint directory or s3:// URI")
    p.add_argument("destination", help="new checkpoint directory or s3:// URI")
    p.set_defaults(func=_export)

    p = sub.add_parser("cluster", parents=[common], help="validate a cluster YAML, or launch it with Ray's launcher")
    p.add_argument("action", choices=["validate", "up", "down", "dashboard", "attach"])
    p.add_argument("file", help="cluster YAML, e.g. cluster/aws-gpu.yaml")
    p.set_defaults(func=_cluster)

    jobs_address = argparse.ArgumentParser(add_help=False, parents=[output])
    jobs_address.add_argument("--address", required=True, help="the Jobs API (dashboard) URL, e.g. http://127.0.0.1:8265")
    p = sub.add_parser("submit", parents=[jobs_address], help="run train/tune on a cluster as a Ray job")
    p.add_argument("config", help="experiment YAML, relative to this directory (which is shipped)")
    p.add_argument("overrides", nargs="*", help="section.field=value")
    p.add_argument("--command", choices=["train", "tune", "run"], default="train",
                   help="what the job runs (also accepted as a bare word after the config: ... run)")
    p.add_argument("--wait", action="store_true", help="follow the logs; exit 1 if the job fails")
    p.add_argument("--gpus", type=float, default=0, help="GPUs for the job's driver (entrypoint)")
    p.add_argument("--cpus", type=float, default=None, help="CPUs for the job's driver (entrypoint)")
    p.set_defaults(func=_submit)
    for name, helptext in (("status", "a job's status"), ("logs", "a job's logs"), ("stop", "stop a job")):
        p = sub.add_parser(name, parents=[jobs_address], help=helptext)
        p.add_argument("job_id")
        if name == "logs":
            p.add_argument("--follow", action="store_true", help="keep printing until the job ends")
        p.set_defaults(func=_job, action=name)
    p = sub.add_parser("list", parents=[jobs_address], help="jobs on the cluster")
    p.set_defaults(func=_list_jobs)
    return parser


def _encoding(name: str) -> str:
    """--encoding's value, if Python knows it as a text encoding (argparse: exit 2 with the message)."""
    from orchestrator.config import check_encoding

    try:
        check_encoding(name, "")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).strip()) from None
    return name


def _train(args) -> dict:
    from orchestrator.config import load_config

    cfg = load_config(args.config, args.overrides)  # fails fast, before torch and Ray are imported
    from orchestrator.report import beside_baseline, headline, relied_on
    from orchestrator.train import train

    result = train(cfg, address=args.address).to_dict()
    m = result["metrics"]
    lines = [beside_baseline(m.get("test_accuracy"), result["baseline"]), f"checkpoint {result['checkpoint']}",
             relied_on(result["importance"]), f"next: orchestrator evaluate {result['checkpoint']}"]
    print(f"\nrun {result['run']} done in {result['duration_s']}s: {headline(m)}\n"
          + "\n".join(line for line in lines if line), flush=True)
    return result


def _tune(args) -> dict:
    from orchestrator.config import load_config

    cfg = load_config(args.config, args.overrides)  # a bad search space fails here, before Ray starts
    from orchestrator.report import headline
    from orchestrator.tune import tune

    searched = tune(cfg, address=args.address, resume=args.resume)
    result = searched.to_dict()
    m = result["best_metrics"]
    print(f"\nsearch {result['experiment']} done in {result['duration_s']}s: {searched.outcome()}\n"
          f"best {result['best_config']}\n"
          f"best {headline(m)}\n"
          f"checkpoint {result['best_checkpoint']}\ntrials {result['results_path']}  plots {' '.join(result['plots'])}\n"
          # every trial's curves are under the experiment (Ray's own TensorBoard hint names a staging directory)
          f"curves: tensorboard --logdir {result['results_path'].rsplit('/', 1)[0]}\n"
          f"next: orchestrator evaluate {result['best_checkpoint']}", flush=True)
    return result


def _run(args) -> dict:
    from orchestrator.config import load_config

    cfg = load_config(args.config, args.overrides)
    from orchestrator import pipeline
    from orchestrator.runtime import ray_session

    checked = pipeline.check(cfg, args.host, None if args.address else args.port)  # exit 2 before Ray starts
    with ray_session(args.address):
        result = pipeline.run(cfg, address=args.address, host=args.host, port=args.port, app=args.name,
                              checked=checked)
        pipeline.print_summary(result)
        if args.address or args.exit_after_smoke:
            return result
        return _serve_until_interrupted(args, result)


def sleep_until_interrupted() -> None:
    """Return only by KeyboardInterrupt, raised within half a second of Ctrl-C (SIGINT)."""
    # Python's own Ctrl-C, whatever handler a Ray library left installed: a handler that only sets a
    # flag would leave this loop sleeping
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # Short sleeps: Linux may hand the signal to any of Ray's threads, and then nothing wakes the main
    # thread; Python raises KeyboardInterrupt in it when its sleep ends. With hour-long sleeps, a CI
    # run once waited out 60 s after Ctrl-C with the main thread still asleep.
    while True:
        time.sleep(0.5)


def _serve_until_interrupted(args, result: dict) -> dict:
    """Keep the embedded Ray's endpoint up until Ctrl-C; the result is printed now, not at exit."""
    import ray

    node = next(n for n in ray.nodes() if n["Alive"])  # the one node: this machine, its ports on loopback
    result = {**result, "ray_address": ray.get_runtime_context().gcs_address,  # for serve status, rollback, ...
              "metrics_url": f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"}
    if args.json:
        print(json.dumps(result, sort_keys=True), flush=True)
        args.json = False
    print(f"metrics for Prometheus (Ray Serve's: requests, latency, batches, replicas): {result['metrics_url']}",
          flush=True)
    print(f"serving; Ctrl-C stops the endpoint. From another shell: orchestrator serve status --address "
          f"{result['ray_address']}", flush=True)
    try:
        sleep_until_interrupted()
    except KeyboardInterrupt:
        from ray import serve as ray_serve

        ray_serve.shutdown()
        print("endpoint stopped", flush=True)
    return result


def _models(args) -> dict:
    from orchestrator.registry import PRODUCTION, Registry

    registry = Registry(args.registry)
    if args.action == "list":
        models = [args.model] if args.model else registry.models()
        result = {"registry": registry.root, "models": {}}
        for name in models:
            aliases = registry.aliases(name)["aliases"]
            rows = []
            for r in registry.versions(name):
                tags = [a for a, v in aliases.items() if v == r["version"]]
                rows.append({"version": r["version"], "aliases": tags, "registered_at": r["registered_at"],
                             "metrics": r["metrics"], "code_version": r["lineage"].get("code_version")})
                acc = r["metrics"].get("test_accuracy")
                print(f"{name:16} v{r['version']:<4} {','.join(tags):22} test_accuracy "
                      f"{'-' if acc is None else f'{acc:.4f}'}  {r['registered_at']}  "
                      f"{r['lineage'].get('code_version', '')}", flush=True)
            result["models"][name] = rows
        if not models:
            print(f"no models in {registry.root}", flush=True)
        return result
    model = registry.model_name(args.model)
    if args.action == "show":
        record = registry.resolve(model, args.ref or PRODUCTION)
        print(json.dumps(record, indent=2, sort_keys=True), flush=True)
        return record
    if args.action == "promote":
        if not args.ref:
            raise ConfigError("models promote needs the version to promote, e.g. orchestrator models promote 3")
        result = registry.promote(model, args.ref, args.alias, force=args.force)
        if not result["promoted"]:
            raise ConfigError(f"{model} v{result['version']} not promoted to {args.alias}: "
                              + "; ".join(result["reasons"]) + " (--force promotes anyway)")
        print(f"{model} {args.alias}: v{result['previous']} -> v{result['version']}"
              + (" (forced past: " + "; ".join(result["reasons"]) + ")" if result.get("forced") else ""), flush=True)
    else:
        if args.ref:
            raise ConfigError("models rollback takes no version: it moves the alias back to its previous version")
        result = registry.rollback(model, args.alias)
        print(f"{model} {args.alias}: v{result['previous']} -> v{result['version']} (rolled back)", flush=True)
    result["endpoints"] = _follow(model, args, registry.root)
    return result


def _follow(model: str, args, root: str) -> list[dict]:
    """With --address, move the endpoints that serve the alias; without, say how."""
    ref = f"models:/{model}@{args.alias}"
    if not args.address:
        print(f"endpoints serving {ref} move when this runs with --address of their Ray cluster", flush=True)
        return []
    from orchestrator import serve
    from orchestrator.runtime import ray_session

    with ray_session(args.address):
        moved = serve.follow_alias(model, args.alias, root)
    for m in moved:
        print(f"endpoint {m['app']} at {m['url']} now serves {m['checkpoint']} (weights {m['version']})", flush=True)
    if not moved:
        print(f"no endpoint on {args.address} serves {ref}", flush=True)
    return moved


def _evaluate(args) -> dict:
    from orchestrator.evaluate import evaluate_checkpoint, evaluate_on_data
    from orchestrator.report import beside_baseline

    result = (evaluate_on_data(args.checkpoint, args.data, args.encoding, args.sheet, args.image_dir) if args.data
              else evaluate_checkpoint(args.checkpoint, args.split))
    classes = result.get("per_class") or []  # a language model has none
    if classes and len(classes) <= 30 and not args.json:  # more: one line each says little; --json has them
        width = max(len(row["class"]) for row in [{"class": "class"}, *classes])
        print(f"{'class':<{width}}  precision     recall         f1    support", flush=True)
        for row in classes:
            print(f"{row['class']:<{width}}  {row['precision']:9.4f}  {row['recall']:9.4f}  {row['f1']:9.4f}  "
                  f"{row['support']:9d}", flush=True)
    print("  ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items()), flush=True)
    if against := beside_baseline(result["metrics"].get("accuracy" if args.data else f"{args.split}_accuracy"),
                                  result.get("baseline")):
        print(against, flush=True)
    return result


def _serve(args) -> dict:
    from orchestrator.config import ServeArgs, apply_overrides, parse

    ops = ("status", "rollback", "shutdown")
    if args.target in ops:
        if args.overrides:
            raise ConfigError(f"serve {args.target} takes no settings")
        return _serve_op(args)
    serve_args = parse(ServeArgs, apply_overrides({"checkpoint": args.target}, args.overrides), source="serve settings")
    from orchestrator import serve
    from orchestrator.runtime import ray_session

    serve_args, predictor = serve.check_deployable(serve_args, args.host)  # exit 2 before Ray starts
    if not args.address:  # the embedded Ray will start Serve on this machine
        serve.check_port_free(args.host, args.port)
    with ray_session(args.address):
        result = serve.deploy(serve_args, name=args.name, route_prefix=args.route_prefix, host=args.host,
                              port=args.port, request_timeout_s=args.request_timeout_s, checked=predictor)
        print(f"serving {result['checkpoint']} (version {result['version']}) at {result['url']}\n"
              f"try: orchestrator predict {result['url']} --input FILE   docs: {result['url']}/docs", flush=True)
        if args.address:  # the endpoint stays on the cluster
            return result
        return _serve_until_interrupted(args, result)


def _serve_op(args) -> dict:
    from orchestrator.runtime import ray_session

    if not args.address:
        raise ConfigError(f"serve {args.target} needs --address of the Ray cluster the app runs on (e.g. auto)")
    with ray_session(args.address):
        from orchestrator import serve  # Ray Serve and torch: seconds to import, so not before the cluster answers

        if args.target == "status":
            result = serve.status()
        elif args.target == "shutdown":
            result = serve.shutdown(args.name)
        else:
            result = serve.rollback(args.name, host=args.host, port=args.port, request_timeout_s=args.request_timeout_s)
    print(json.dumps(result, indent=2, sort_keys=True), flush=True)
    return result


def _predict(args) -> dict:
    from orchestrator import datafiles, storage

    if args.columns and not args.output:
        raise ConfigError("--columns chooses the columns of the --output file: give --output too")
    if args.output:  # before any prediction: a name it cannot write is said now, not after the work
        try:
            datafiles.check_writable(args.output)
        except UserError as e:
            raise ConfigError(f"--output {e}") from None
        same = (args.output.rstrip("/") == args.input.rstrip("/") if storage.is_remote(args.output)
                else Path(args.output).resolve() == Path(args.input).resolve())
        if args.input != "-" and same:
            raise ConfigError(f"--output {args.output} is the --input file: name another, to keep the inputs")
    remote = args.target.startswith(("http://", "https://"))
    if remote:  # a file is read as the model's training read its data: the endpoint's model says how
        from orchestrator.client import described

        model = described(args.target, api_key=os.environ.get(args.api_key_env))
        trained_on = (model.get("config") or {}).get("data") or {}
    else:
        trained_on = _training_data(args.target)
    names, instances = _read_inputs(args.input, _read_as(args, trained_on))
    if remote:
        from orchestrator.client import predict_all

        result = predict_all(args.target, instances, api_key=os.environ.get(args.api_key_env))
    else:
        from orchestrator.errors import RequestError
        from orchestrator.predictor import Predictor

        predictor = _local_model(args.target, Predictor)
        try:
            result = predictor.encode(predictor.predict(predictor.validate(instances)))
        except RequestError as e:
            raise ConfigError(f"--input: {e.message}") from None
    if names:
        result["inputs"] = names
    elif all(isinstance(i, str) for i in instances):  # texts: each line starts with its text's start
        names = [_snippet(text) for text in instances]
    if args.output:
        rows = _scored_rows(instances, names if result.get("inputs") else None, result)
        if args.columns:
            rows = _chosen(rows, args.columns, trained_on.get("label_column") or "label")
        datafiles.write_rows(args.output, rows)
        counts = Counter(p["label"] for p in result["predictions"])
        n = len(result["predictions"])
        print(f"wrote {n:,} prediction{'s' * (n != 1)} to {args.output}: "
              + ", ".join(f"{label} {n:,}" for label, n in counts.most_common()), flush=True)
        result["output"] = args.output
    elif not args.json:
        for i, p in enumerate(result["predictions"]):
            source = f"{names[i]}\t" if names else ""
            print(f"{source}{p['label']}\t{max(p['probabilities']):.4f}", flush=True)
    return result


def _scored_rows(instances: list, files: list[str] | None, result: dict) -> list[dict]:
    """Each input as a row (a table's row as it came, less a column of image files; a text, an image's file, other
    inputs as they are), then its prediction, that prediction's probability and every class's."""
    labels = result["labels"]
    scores = ["prediction", "probability", *(f"probability_{label}" for label in labels)]
    rows = []
    for i, (instance, p) in enumerate(zip(instances, result["predictions"], strict=True)):
        row = ({"file": files[i]} if files else {k: v for k, v in instance.items() if not isinstance(v, dict)}
               if isinstance(instance, dict)
               else {"text": instance} if isinstance(instance, str) else {"input": instance})
        if clash := [c for c in scores if c in row]:
            raise ConfigError(f"--input has columns {clash}, which --output would write the predictions to: "
                              "rename them, or leave --output out to print the predictions")
        probabilities = [round(v, 6) for v in p["probabilities"]]  # float32's digits, not float64's noise
        rows.append({**row, **dict(zip(scores, [p["label"], max(probabilities), *probabilities], strict=True))})
    return rows


def _chosen(rows: list[dict], columns: list[str], label: str) -> list[dict]:
    """Each row's `columns`, in that order; `label` (the training's label column) stands for the prediction, unless
    the input has a column of that name."""
    have = list(rows[0]) if rows else []
    source = {c: c if c in have else "prediction" if c == label else None for c in columns}
    if missing := [c for c, found in source.items() if found is None]:
        raise ConfigError(f"--columns {missing} are not among the output's columns: {have} (or {label!r}, the "
                          "prediction)")
    return [{c: row[found] for c, found in source.items()} for row in rows]


def _names(text: str) -> list[str]:
    """A comma-separated list of column names (argparse: exit 2 where it names none)."""
    if not (names := [name.strip() for name in text.split(",") if name.strip()]):
        raise argparse.ArgumentTypeError("name the columns, comma-separated: PassengerId,Survived")
    return names


def _snippet(text: str, width: int = 40) -> str:
    """A text on one line of at most `width` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3].rstrip() + "..."


def _read_as(args, trained_on: dict):
    """How --input's table file is read: as the model's training read its data (datafiles.read_as)."""
    from orchestrator.config import FilesData
    from orchestrator.datafiles import read_as

    return FilesData(name="files", path=args.input,
                     **read_as(args.input, trained_on, encoding=args.encoding, sheet=args.sheet,
                               image_dir=args.image_dir))


def _read_inputs(source: str, how) -> tuple[list[str] | None, list]:
    """--input's inputs, and their file names where they are images. `source`: - (stdin) or a file, local,
    on S3 or on GCS: JSON ({"instances": [...]} or a list of inputs); a table file (CSV, TSV, Parquet, ...: what
    `data.name: files` reads, as `how` says) or a directory of them, whose rows go as objects keyed by column
    name; a .txt file of texts for a model of text, one a line, or a directory of text files, one each; an image
    file or a directory of them, sent as they are (the model decodes them as its training did)."""
    import base64

    from orchestrator import datafiles, storage
    from orchestrator.images import is_image_file

    if source == "-":
        return None, _instances(sys.stdin.read(), source)
    try:
        kind = storage.file_type(source, web=True)
    except UserError as e:
        raise ConfigError(f"--input {e}") from None
    if kind is None:
        why = storage.web_failure(source) if source.startswith(storage.WEB) else "no such file"
        raise ConfigError(f"--input {source}: {why}")
    if is_image_file(source) or (kind == "directory" and datafiles.holds_images(source)):
        names, contents = datafiles.read_image_files(source)
        return names, [{"b64": base64.b64encode(raw).decode()} for raw in contents]
    if kind == "directory" and (how.format == "texts" or datafiles.data_files(source, None, None, say=False)[3]
                                == "texts"):
        return datafiles.read_text_files(source, how)  # a text a file, as a model of a folder of texts learnt them
    json_file = posixpath.splitext(source.lower())[1] == ".json"  # {"instances": [...]} or a list of inputs
    table = datafiles.is_table_file(source) or how.format not in (None, "json", *datafiles.FOLDERS)  # or as trained
    if kind == "directory" or (table and not json_file):  # Spark's, Ray Data's parts
        return None, datafiles.read_rows(source, how)
    try:
        raw = storage.read_bytes(source, web=True)
        text = raw.decode(how.encoding if source.endswith(".txt") else "utf-8")  # JSON: UTF-8
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read --input {source}: {getattr(e, 'strerror', None) or e}") from None
    if source.endswith(".txt"):
        return None, [line for line in text.removeprefix("\ufeff").splitlines() if line.strip()]
    return None, _instances(text, source)


def _instances(text: str, source: str) -> list:
    """The inputs in JSON text: {"instances": [...]} or a list of them."""
    text = text.removeprefix("\ufeff")  # the byte-order mark spreadsheet programs put before UTF-8 text
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--input {source} is not JSON: {e} (a table of inputs: a .csv file with a header)") from None
    if isinstance(payload, dict) and "instances" in payload:
        payload = payload["instances"]
    if not isinstance(payload, list):
        raise ConfigError(f'--input {source} must hold {{"instances": [...]}} or a list of inputs')
    return payload


def _generate(args) -> dict:
    payload = {"prompt": args.prompt, "max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
               "top_k": args.top_k or None, "seed": args.seed}
    if not args.target.startswith(("http://", "https://")):
        from orchestrator.errors import RequestError
        from orchestrator.predictor import TextGenerator

        generator = _local_model(args.target, TextGenerator)
        try:
            request = generator.validate(payload)
        except RequestError as e:
            raise ConfigError(f"--{e.code.removeprefix('invalid_').replace('_', '-')}: {e.message}") from None
        made, decoder = bytearray(), codecs.getincrementaldecoder("utf-8")(errors="replace")

        def texts():
            for byte in generator.steps(request):
                made.append(byte)
                yield decoder.decode(bytes([byte]))
            yield decoder.decode(b"", final=True)

        _show(args.prompt, texts(), args.json)
        return generator.encode(request, bytes(made))
    from orchestrator import client

    key = os.environ.get(args.api_key_env)
    if args.json:
        return client.call(args.target, "/v1/generate", payload, api_key=key)
    completion = {"prompt": args.prompt, "max_tokens": args.max_new_tokens, "temperature": args.temperature,
                  "top_k": args.top_k or None, "seed": args.seed}  # OpenAI's names: streamed as its clients are
    return {"prompt": args.prompt, "completion": _show(args.prompt, client.stream_completion(args.target, completion,
                                                                                              api_key=key))}


def _show(prompt: str, texts, quiet: bool = False) -> str:
    """The text as it comes, after its prompt (shown with the first of it: an error before prints nothing)."""
    shown = []
    for text in texts:
        if not quiet:
            print(("" if shown else prompt) + text, end="", flush=True)
        shown.append(text)
    if not quiet:
        print(flush=True)
    return "".join(shown)


def _training_data(uri: str) -> dict:
    """The data section of a checkpoint's config, for how its training read files (encoding, sheet); {} where it
    cannot be read: the checkpoint is verified, and refused if it must be, when its model is loaded."""
    import yaml

    from orchestrator import storage

    try:
        config = yaml.safe_load(storage.read_bytes(posixpath.join(uri, "config.yaml")))
        return config.get("data") or {}
    except Exception:  # noqa: BLE001 (a missing or broken checkpoint is named when its model is loaded)
        return {}


def _local_model(uri: str, kind: type):
    """The checkpoint's predictor, offline (no per-request limits), if it is of `kind`."""
    from orchestrator import predictor

    model = predictor.load(uri, max_instances=sys.maxsize, max_new_tokens=sys.maxsize)
    if not isinstance(model, kind):
        command = "generate --prompt TEXT" if isinstance(model, predictor.TextGenerator) else "predict --input FILE"
        raise ConfigError(f"{uri} holds a {model.info['family']} model: use orchestrator {command}")
    return model


def _export(args) -> dict:
    from orchestrator.checkpoint import export

    destination = export(args.checkpoint, args.destination)
    print(f"exported {args.checkpoint} to {destination}", flush=True)
    return {"checkpoint": args.checkpoint, "exported": destination}


def _cluster(args) -> dict:
    from orchestrator import cluster

    if args.action != "validate":
        code = cluster.launcher(args.action, args.file)
        if code:
            raise RuntimeError(f"ray {args.action} exited {code}")
        return {"file": args.file, "action": args.action}
    result = cluster.report(args.file, cluster.validate(args.file))
    if not result["ok"]:
        if args.json:
            print(json.dumps(result, sort_keys=True), flush=True)
        raise ConfigError(f"{args.file} fails validation (errors above)")
    print(f"next: orchestrator cluster up {args.file}", flush=True)
    return result


def _submit(args) -> dict:
    from orchestrator import jobs

    # after `--`, flags of the command itself: submit CONFIG --address URL run -- --port 8100
    flags_at = next((i for i, o in enumerate(args.overrides) if o.startswith("-")), len(args.overrides))
    overrides, flags = args.overrides[:flags_at], [f for f in args.overrides[flags_at:] if f != "--"]
    words = [o for o in overrides if o in jobs.COMMANDS]
    if len(words) > 1 or (words and args.command != "train" and words[0] != args.command):
        raise ConfigError(f"submit runs one command; got {words + [args.command]}")
    command = words[0] if words else args.command
    overrides = [o for o in overrides if o not in jobs.COMMANDS]
    result = jobs.submit(args.config, overrides, args.address, command, args.gpus, args.cpus, flags=flags)
    if args.wait:
        result["status"] = jobs.follow(result["job_id"], args.address)
        print(f"job {result['job_id']}: {result['status']}", flush=True)
        if result["status"] != "SUCCEEDED":
            if args.json:
                print(json.dumps(result, sort_keys=True), flush=True)
            raise JobFailed(f"job {result['job_id']} ended {result['status']}; "
                            f"see: orchestrator logs {result['job_id']} --address {args.address}")
    return result


class JobFailed(RuntimeError):
    pass


def _job(args) -> dict:
    from orchestrator import jobs

    address, job_id = args.address, args.job_id
    if args.action == "logs" and args.follow:
        return {"job_id": job_id, "status": jobs.follow(job_id, address)}
    if args.action == "logs":
        print(jobs.call(address, "get_job_logs", job_id), end="", flush=True)
        return {"job_id": job_id}
    if args.action == "stop":
        stopped = jobs.call(address, "stop_job", job_id)
        print(f"stop requested for {job_id}\nnext: orchestrator status {job_id} --address {address}", flush=True)
        return {"job_id": job_id, "stopped": bool(stopped)}
    status = str(jobs.call(address, "get_job_status", job_id).value)
    print(f"{job_id}: {status}\nnext: orchestrator logs {job_id} --address {address}", flush=True)
    return {"job_id": job_id, "status": status}


def _list_jobs(args) -> dict:
    from orchestrator import jobs

    listed = jobs.call(args.address, "list_jobs")
    rows = [{"job_id": j.submission_id, "status": str(j.status.value), "entrypoint": j.entrypoint} for j in listed]
    for r in rows:
        print(f"{r['job_id']}  {r['status']:9}  {r['entrypoint']}", flush=True)
    return {"jobs": rows}


if __name__ == "__main__":
    sys.exit(main())
