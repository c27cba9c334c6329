"""The command line: a thin layer over the Python API.

    orchestrator train jobs/digits-cnn.yaml [section.field=value ...] [--address ADDR] [--json]
    orchestrator tune jobs/digits-tune.yaml [section.field=value ...] [--resume] [--address ADDR] [--json]
    orchestrator evaluate CHECKPOINT_URI [--split test] [--json]

Exit codes: 0 done, 1 the work failed, 2 bad input (the message says what to change).
"""

from __future__ import annotations

import argparse
import json
import sys

from orchestrator.errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the work itself failed: say so in one line, keep the details in Ray's logs
        if type(e).__name__ in ("TrainingFailedError", "RayTaskError", "RaySystemError"):
            print(f"error: {type(e).__name__}: {str(e).strip().splitlines()[0]}", file=sys.stderr)
            return 1
        raise
    if args.json:
        print(json.dumps(result, sort_keys=True), flush=True)
    return 0


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--address", help="Ray cluster to join (e.g. auto, 10.0.0.5:6379); default: embedded local Ray")
    common.add_argument("--json", action="store_true", help="print one JSON object as the last line of stdout")

    parser = argparse.ArgumentParser(prog="orchestrator", description="Train, tune and serve PyTorch models on Ray.")
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    p = sub.add_parser("train", parents=[common], help="train a model with Ray Train")
    p.add_argument("config", help="experiment YAML, e.g. jobs/digits-cnn.yaml")
    p.add_argument("overrides", nargs="*", help="section.field=value, e.g. train.num_workers=4 optim.lr=0.01")
    p.set_defaults(func=_train)

    p = sub.add_parser("tune", parents=[common], help="search hyperparameters with Ray Tune")
    p.add_argument("config", help="experiment YAML with a tune section, e.g. jobs/digits-tune.yaml")
    p.add_argument("overrides", nargs="*", help="section.field=value, e.g. tune.num_samples=20")
    p.add_argument("--resume", action="store_true", help="continue the latest interrupted search of this config")
    p.set_defaults(func=_tune)

    p = sub.add_parser("evaluate", parents=[common], help="evaluate a checkpoint on a data split")
    p.add_argument("checkpoint", help="checkpoint directory or s3:// URI")
    p.add_argument("--split", choices=["train", "val", "test"], default="test")
    p.set_defaults(func=_evaluate)
    return parser


def _train(args) -> dict:
    from orchestrator.config import load_config

    cfg = load_config(args.config, args.overrides)  # fails fast, before torch and Ray are imported
    from orchestrator.train import train

    result = train(cfg, address=args.address).to_dict()
    m = result["metrics"]
    print(f"\nrun {result['run']} done in {result['duration_s']}s: test_accuracy {m['test_accuracy']:.4f}  "
          f"test_f1 {m['test_f1']:.4f}\ncheckpoint {result['checkpoint']}\n"
          f"next: orchestrator evaluate {result['checkpoint']}", flush=True)
    return result


def _tune(args) -> dict:
    from orchestrator.config import load_config

    cfg = load_config(args.config, args.overrides)  # a bad search space fails here, before Ray starts
    from orchestrator.tune import tune

    result = tune(cfg, address=args.address, resume=args.resume).to_dict()
    m = result["best_metrics"]
    print(f"\nsearch {result['experiment']} done in {result['duration_s']}s: {result['num_trials']} trials, "
          f"{result['num_stopped_early']} stopped early\nbest {result['best_config']}\n"
          f"best test_accuracy {m['test_accuracy']:.4f}  test_f1 {m['test_f1']:.4f}\n"
          f"checkpoint {result['best_checkpoint']}\ntrials {result['results_path']}  plots {' '.join(result['plots'])}\n"
          f"next: orchestrator evaluate {result['best_checkpoint']}", flush=True)
    return result


def _evaluate(args) -> dict:
    from orchestrator.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(args.checkpoint, args.split, args.address)
    print("  ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items()), flush=True)
    return result


if __name__ == "__main__":
    sys.exit(main())
