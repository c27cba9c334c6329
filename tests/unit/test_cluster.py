"""Cluster YAMLs: Ray's own validator, the security lint, and the AWS bootstrap under moto."""

import copy

import pytest
import yaml

from orchestrator import cluster
from tests.conftest import ROOT
from tests.unit.test_cli_errors import run_cli

AWS = ROOT / "cluster" / "aws-gpu.yaml"
GCP = ROOT / "cluster" / "gcp-gpu.yaml"


def variant(tmp_path, source, change) -> str:
    config = yaml.safe_load(source.read_text())
    change(config)
    path = tmp_path / source.name
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.parametrize("path", [AWS, GCP], ids=["aws", "gcp"])
def test_cloud_files_pass_rays_validator_and_the_lint(path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config, _ = cluster.load(path)
    validate_config(prepare_config(copy.deepcopy(config)))  # raises on any schema or consistency error
    assert [f for f in cluster.validate(path) if f.level == "error"] == []
    proc = run_cli("cluster", "validate", str(path))
    assert proc.returncode == 0 and "ok (0 errors" in proc.stdout


def open_dashboard(c):
    c["provider"]["security_group"]["IpPermissions"] = (
        [{"IpProtocol": "tcp", "FromPort": 8265, "ToPort": 8265, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])


def no_worker_token(c):
    c["worker_start_ray_commands"] = [cmd.replace("RAY_AUTH_MODE=token ", "") for cmd in c["worker_start_ray_commands"]]


BROKEN = {
    "typo key": (AWS, lambda c: c.update(max_worker=3), "ray", "max_worker"),
    "bad head type": (AWS, lambda c: c.update(head_node_type="nope"), "ray", "`head_node_type` must be one of"),
    "world-open dashboard port": (AWS, open_dashboard, "network", "8265-8265/tcp are open to 0.0.0.0/0"),
    "world-open over IPv6": (AWS, lambda c: c["provider"]["security_group"].update(IpPermissions=[
        {"IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}]), "network", "open to ::/0"),
    "no token on workers": (AWS, no_worker_token, "auth", "without token auth"),
    "token not mounted": (GCP, lambda c: c["file_mounts"].pop("~/.ray/auth_token"), "auth", "file_mounts"),
    "dashboard on 0.0.0.0": (GCP, lambda c: c.update(head_start_ray_commands=[
        c["head_start_ray_commands"][1].replace("127.0.0.1", "0.0.0.0")]), "dashboard", "--dashboard-host=127.0.0.1"),
    "default start commands": (AWS, lambda c: c.pop("head_start_ray_commands"), "dashboard", "Ray's default"),
    "a key in plain text": (AWS, lambda c: c["setup_commands"].append("export AWS_ACCESS_KEY_ID=AKIAABCDEFGHIJKLMNOP"),
                            "secrets", "AWS access key id"),
    "node type without resources": (GCP, lambda c: c["available_node_types"]["gpu_t4_spot"].pop("resources"),
                                    "resources", "gpu_t4_spot"),
    "no provider": (AWS, lambda c: c.pop("provider"), "ray", "'provider' is a required property"),
    "empty node type": (GCP, lambda c: c["available_node_types"].update(head=None), "ray",
                        "None is not of type 'object' (at available_node_types.head)"),
    "gcp default network": (GCP, lambda c: c["available_node_types"]["head"]["node_config"].pop("networkInterfaces"),
                            "network", "default network"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_variants_are_refused_with_the_reason(case, tmp_path):
    source, change, check, reason = BROKEN[case]
    path = variant(tmp_path, source, change)
    errors = [f for f in cluster.validate(path) if f.level == "error"]
    assert any(f.check == check and reason in f.message for f in errors), errors
    proc = run_cli("cluster", "validate", path)
    assert proc.returncode == 2 and reason in proc.stdout and "Traceback" not in proc.stderr


def test_an_experiment_config_is_named_as_such():
    proc = run_cli("cluster", "validate", str(ROOT / "jobs" / "digits.yaml"))
    assert proc.returncode == 2 and "looks like an experiment config" in proc.stdout, proc.stdout
    assert "Traceback" not in proc.stderr


def test_rays_world_open_ssh_is_a_warning_unless_the_groups_are_your_own(tmp_path):
    findings = cluster.validate(AWS)
    assert [(f.level, f.check) for f in findings] == [("warning", "network")] and "0.0.0.0/0" in findings[0].message

    def own_groups(c):
        for node in c["available_node_types"].values():
            node["node_config"]["SecurityGroupIds"] = ["sg-0123456789abcdef0"]

    assert cluster.validate(variant(tmp_path, AWS, own_groups)) == []


def test_aws_bootstrap_opens_only_ssh_to_the_world(tmp_path, monkeypatch):
    """`ray up`'s own bootstrap path, against moto's emulated AWS, minus launching instances."""
    import boto3
    from moto import mock_aws
    from ray.autoscaler._private import commands
    from ray.autoscaler._private.aws import config as aws_config
    from ray.autoscaler._private.aws import utils as aws_utils

    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):  # the S3 test server is not EC2
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("HOME", str(tmp_path))  # the key pair is written to ~/.ssh
    monkeypatch.setattr(aws_config.time, "sleep", lambda s: None)  # two 15 s IAM waits
    aws_utils.resource_cache.cache_clear()
    aws_utils.client_cache.cache_clear()
    config, _ = cluster.load(AWS)
    with mock_aws(config={"iam": {"load_aws_managed_policies": True}}):
        bootstrapped = commands._bootstrap_config(config, no_config_cache=True)
        ec2 = boto3.client("ec2", region_name=config["provider"]["region"])
        groups = [g for g in ec2.describe_security_groups()["SecurityGroups"] if g["GroupName"] != "default"]
    aws_utils.resource_cache.cache_clear()
    aws_utils.client_cache.cache_clear()
    assert groups, "the bootstrap created no security group"
    assert {n["node_config"]["SecurityGroupIds"][0] for n in bootstrapped["available_node_types"].values()} <= \
        {g["GroupId"] for g in groups}
    world = []
    for group in groups:
        for rule in group["IpPermissions"]:
            cidrs = [r["CidrIp"] for r in rule.get("IpRanges", [])] + [r["CidrIpv6"] for r in rule.get("Ipv6Ranges", [])]
            if any(c in ("0.0.0.0/0", "::/0") for c in cidrs):
                world.append((rule.get("IpProtocol"), rule.get("FromPort"), rule.get("ToPort")))
    assert all(rule == ("tcp", 22, 22) for rule in world), world
    assert ("tcp", 22, 22) in world  # Ray's own SSH rule: the warning the lint gives is real


@pytest.mark.reliability
def test_every_yaml_in_cluster_and_deploy_passes_the_security_lint():
    import re

    files = sorted([*(ROOT / "cluster").glob("*.yaml"), *(ROOT / "deploy").rglob("*.yaml")])
    checked = []
    for path in files:
        text = path.read_text()
        for what, pattern in cluster.SECRETS.items():
            assert not pattern.search(text), f"{path.name} contains {what}"
        assert not re.search(r"dashboard[-_]host\W+0\.0\.0\.0", text), f"{path.name}: dashboard beyond loopback"
        docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
        # a cloud cluster file: Ray's validator, ports, token wiring (fake-multinode.yaml runs Ray's autoscaler on
        # this machine, whose head the user starts with their own flags: it gets the generic checks only)
        if any(d.get("provider", {}).get("type") in ("aws", "gcp") for d in docs):
            errors = [f for f in cluster.validate(path) if f.level == "error"]
            assert errors == [], f"{path.name}: {errors}"
            assert "RAY_AUTH_MODE=token" in text, f"{path.name}: nodes start without token auth"
        for doc in docs:
            spec = doc.get("spec") or {}
            for ray_cluster in (spec.get("rayClusterSpec"), spec.get("rayClusterConfig")):
                if ray_cluster:  # KubeRay: token auth on, no public service
                    assert ray_cluster["authOptions"]["mode"] == "token", path.name
                    assert ray_cluster["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP", path.name
            if "http_options" in doc:  # a Serve config
                assert doc["http_options"]["host"] == "127.0.0.1", path.name
        checked.append(path.name)
    print(f"cluster/deploy lint: {len(checked)} files: {', '.join(checked)}")
    assert len(checked) >= 5
