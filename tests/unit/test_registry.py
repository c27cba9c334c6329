"""The registry on a local directory and on S3 over loopback: versions, aliases, gates, rollback."""

import json

import pytest
import torch

from orchestrator import registry
from orchestrator.checkpoint import read_checkpoint, write_checkpoint
from orchestrator.config import RegistryConfig, config_from_dict
from orchestrator.errors import CheckpointError, ConfigError
from orchestrator.models import build_model
from orchestrator.registry import Registry, check_gates, parse_ref

CFG = config_from_dict({"name": "m", "data": {"name": "digits"}, "model": {"name": "mlp", "hidden_sizes": [8]}})
INFO = {"input_shape": [4], "label_names": ["a", "b"], "normalization": {}, "data_fingerprint": "d1"}
GATES = registry.gates(RegistryConfig(min_metrics={"test_accuracy": 0.8}, tolerance=0.01))


def checkpoint(path, seed: int, fingerprint: str = "d1") -> str:
    torch.manual_seed(seed)
    write_checkpoint(str(path), model=build_model(CFG.model, [4], 2), config=CFG, model_info=INFO,
                     metrics={"val_accuracy": 0.9}, lineage={"config_hash": CFG.hash(), "data_fingerprint": fingerprint,
                                                              "code_version": "git:abc"})
    return str(path)


def register(reg, tmp_path, seed, accuracy, fingerprint="d1"):
    ckpt = checkpoint(tmp_path / f"ckpt-{seed}", seed, fingerprint)
    return reg.register("m", ckpt, metrics={"test_accuracy": accuracy, "test_loss": 1 - accuracy}, gates=GATES,
                        source={"run": f"r{seed}"})


def test_versions_are_numbered_verified_copies_with_lineage(tmp_path):
    reg = Registry(str(tmp_path / "reg"))
    first, second = register(reg, tmp_path, 1, 0.9), register(reg, tmp_path, 2, 0.95)
    assert (first["version"], second["version"]) == (1, 2)
    assert [r["version"] for r in reg.versions("m")] == [1, 2] and reg.models() == ["m"]
    copy = read_checkpoint(second["checkpoint"])  # verified against its manifest
    assert copy.lineage()["data_fingerprint"] == "d1" and second["lineage"]["code_version"] == "git:abc"
    assert reg.aliases("m")["aliases"] == {"candidate": 2}  # the newest registration is the candidate
    assert reg.resolve("m", "v1")["source"]["run"] == "r1" and reg.resolve("m", "candidate")["version"] == 2
    with pytest.raises(ConfigError, match="has no version 7"):
        reg.resolve("m", 7)
    with pytest.raises(ConfigError, match="no alias 'production'"):
        reg.resolve("m", "production")
    with pytest.raises(ConfigError, match="'m' is a model's name: give it as --model m"):  # models show m
        reg.resolve("m", "m")


def test_a_tampered_checkpoint_is_not_registered(tmp_path):
    ckpt = checkpoint(tmp_path / "c", 1)
    (tmp_path / "c" / "metrics.json").write_text('{"val_accuracy": 1.0}')
    with pytest.raises(CheckpointError, match="does not match its sha256"):
        Registry(str(tmp_path / "reg")).register("m", ckpt, metrics={}, gates={}, source={})
    assert Registry(str(tmp_path / "reg")).versions("m") == []


def test_promotion_is_gated_and_says_why(tmp_path):
    reg = Registry(str(tmp_path / "reg"))
    register(reg, tmp_path, 1, 0.70)  # below the 0.8 minimum
    refused = reg.promote("m", 1)
    assert not refused["promoted"] and "test_accuracy 0.7000 is below the required 0.8" in refused["reasons"][0]
    assert "production" not in reg.aliases("m")["aliases"]

    register(reg, tmp_path, 2, 0.90)
    assert reg.promote("m", 2)["promoted"]
    register(reg, tmp_path, 3, 0.895)  # worse, but within the 0.01 tolerance
    assert reg.promote("m", 3)["promoted"]
    register(reg, tmp_path, 4, 0.86)  # worse than production v3 by more than the tolerance
    refused = reg.promote("m", 4)
    assert not refused["promoted"] and "worse than production v3's 0.8950" in refused["reasons"][0]
    forced = reg.promote("m", 4, force=True)
    assert forced["promoted"] and forced["forced"] and reg.aliases("m")["log"][-1]["forced"]
    assert reg.resolve("m", "production")["version"] == 4


def test_gates_compare_losses_downwards_and_note_other_data(tmp_path):
    rec = lambda v, loss, fp: {"version": v, "metrics": {"test_loss": loss}, "lineage": {"data_fingerprint": fp},
                               "gates": {"compare_metric": "test_loss", "max_metrics": {"test_loss": 0.5}}}
    assert check_gates(rec(2, 0.2, "a"), rec(1, 0.3, "a")) == []
    assert "worse than production v1's 0.2000" in check_gates(rec(2, 0.3, "a"), rec(1, 0.2, "a"))[0]
    assert "tested on different data" in check_gates(rec(2, 0.3, "b"), rec(1, 0.2, "a"))[0]
    assert "above the allowed 0.5" in check_gates(rec(2, 0.6, "a"), None)[0]


def test_rollback_walks_back_through_the_alias_history(tmp_path):
    reg = Registry(str(tmp_path / "reg"))
    for seed in (1, 2, 3):
        register(reg, tmp_path, seed, 0.9)
        reg.promote("m", seed)
    assert reg.rollback("m") == {"model": "m", "alias": "production", "version": 2, "previous": 3}
    assert reg.rollback("m")["version"] == 1
    with pytest.raises(ConfigError, match="no earlier version"):
        reg.rollback("m")
    actions = [e["action"] for e in reg.aliases("m")["log"] if e["alias"] == "production"]
    assert actions == ["promote", "promote", "promote", "rollback", "rollback"]


def test_model_references():
    assert parse_ref("models:/digits@production") == ("digits", "production")
    assert parse_ref("models:/digits/3") == ("digits", "3")
    for bad in ("models:/digits", "models:/@x", "digits@production", "models:/d/x"):
        with pytest.raises(ConfigError, match="not a model reference"):
            parse_ref(bad)


def test_the_registry_works_on_s3(s3_bucket, tmp_path):
    reg = Registry(f"s3://{s3_bucket}/registry")
    register(reg, tmp_path, 1, 0.9)
    assert reg.promote("m", 1)["promoted"]
    record = reg.resolve("m", "production")
    assert record["checkpoint"] == f"s3://{s3_bucket}/registry/m/versions/0001/checkpoint"
    assert read_checkpoint(record["checkpoint"]).lineage()["data_fingerprint"] == "d1"
    assert json.loads(json.dumps(reg.aliases("m")))["aliases"] == {"candidate": 1, "production": 1}


def test_listing_and_moving_aliases_needs_no_torch(tmp_path):
    """`orchestrator models list|show|promote|rollback` start in under a second: they read JSON records and
    never import torch (3 s here); only registering reads a checkpoint."""
    import subprocess
    import sys

    reg = Registry(str(tmp_path / "registry"))
    register(reg, tmp_path, 1, 0.9)
    register(reg, tmp_path, 2, 0.95)
    script = ("import sys; from orchestrator.cli import main\n"
              f"for argv in (['list'], ['show', '1'], ['promote', '1'], ['promote', '2'], ['rollback']):\n"
              f"    assert main(['models', *argv, '--registry', {str(reg.root)!r}]) == 0, argv\n"
              "assert 'torch' not in sys.modules, 'torch was imported'")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    log = [(e["action"], e["to"]) for e in reg.aliases("m")["log"] if e["alias"] == "production"]
    assert log == [("promote", 1), ("promote", 2), ("rollback", 1)]  # they really ran
