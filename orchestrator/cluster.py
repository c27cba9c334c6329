"""Cluster YAMLs: Ray's own validation plus a security lint, and thin wrappers over `ray up`.

    orchestrator cluster validate cluster/aws-gpu.yaml     # exit 2 if any check fails
    orchestrator cluster up|down|dashboard|attach cluster/aws-gpu.yaml

The lint encodes what Ray's defaults leave open (see ../shared/notes): a dashboard on 0.0.0.0,
no auth token on the nodes (`ray up` does not distribute it), ports open to the internet.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import re
import shlex
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from orchestrator.config import read_yaml
from orchestrator.errors import ConfigError

TOKEN_PATH = Path("~/.ray/auth_token").expanduser()
SECRETS = {  # patterns that must never appear in a cluster file
    "an AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "an AWS secret access key": re.compile(r"aws_secret_access_key\s*[:=]\s*\S+", re.I),
    "a private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "a service-account key": re.compile(r'"private_key"\s*:'),
    "a Ray auth token": re.compile(r"RAY_AUTH_TOKEN\s*=\s*\S+"),
    "a password": re.compile(r"password\s*[:=]\s*\S+", re.I),
}


@dataclass
class Finding:
    level: str  # error | warning
    check: str
    message: str


def load(path: str | os.PathLike) -> tuple[dict, str]:
    import yaml

    # read as `ray up` reads it (YAML 1.1), so the checks see the values Ray will use
    return read_yaml(path, "cluster file", "a Ray cluster config (a mapping)", load=yaml.safe_load)


def validate(path: str | os.PathLike) -> list[Finding]:
    """Every finding for a cluster file: Ray's schema and consistency checks, then the lint."""
    config, text = load(path)
    findings = ray_checks(config)
    findings += security_lint(config, text)
    return findings


def ray_checks(config: dict) -> list[Finding]:
    """As `ray up` checks: defaults merged by prepare_config, then validate_config (Ray's schema and its
    consistency checks), in Ray's own words, with where in the file."""
    import logging

    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    # prepare_config logs the defaults it fills in ("setting max workers for head node type to 0") at INFO
    logging.getLogger("ray.autoscaler._private.util").setLevel(logging.WARNING)
    try:
        validate_config(prepare_config(copy.deepcopy(config)))
    except (jsonschema.ValidationError, ValueError, RuntimeError) as e:
        return [Finding("error", "ray", _schema_message(e) if isinstance(e, jsonschema.ValidationError)
                        else str(e).strip().splitlines()[0])]
    except Exception as e:  # a KeyError, an AttributeError: Ray tripped over the file's shape
        return [Finding("error", "ray", _shape_error(config) or f"Ray cannot read the file: {type(e).__name__} {e}")]
    return []


def _schema_message(error) -> str:
    where = ".".join(str(p) for p in error.absolute_path)
    return error.message.strip().splitlines()[0] + (f" (at {where})" if where else "")


def _shape_error(config: dict) -> str | None:
    """Ray's schema on the file as written, for a file whose missing or empty section (no provider, a node
    type left empty) stops Ray's check before its schema runs: "'provider' is a required property"."""
    import json

    import jsonschema
    import ray.autoscaler

    with open(Path(ray.autoscaler.__file__).parent / "ray-schema.json") as f:
        schema = json.load(f)
    # ray up fills cluster_name in when it is missing: not the reason
    errors = [e for e in jsonschema.Draft7Validator(schema).iter_errors(config)
              if not (e.validator == "required" and not e.path and "'cluster_name'" in e.message)]
    if not errors:
        return None
    message = _schema_message(jsonschema.exceptions.best_match(errors))
    if "provider" not in config and {"model", "data", "train", "tune"} & set(config):
        message += (": this looks like an experiment config (orchestrator train, tune or submit run it), "
                    "not a cluster file")
    return message


def security_lint(config: dict, text: str) -> list[Finding]:
    out: list[Finding] = []
    provider = config.get("provider") or {}
    head_cmds = config.get("head_start_ray_commands")
    worker_cmds = config.get("worker_start_ray_commands")
    if not head_cmds:
        out.append(Finding("error", "dashboard", "no head_start_ray_commands: Ray's default starts the dashboard "
                                                 "on 0.0.0.0; add them with --dashboard-host=127.0.0.1"))
    starts = [c for c in (head_cmds or []) + (worker_cmds or []) if "ray start" in c]
    for cmd in starts:
        if "--head" in cmd and not re.search(r"--dashboard-host[= ](127\.0\.0\.1|localhost)\b", cmd):
            out.append(Finding("error", "dashboard", "the head's `ray start` must bind the dashboard and Jobs API "
                                                     "to loopback: --dashboard-host=127.0.0.1 (reach it with "
                                                     "`orchestrator cluster dashboard`)"))
        if "RAY_AUTH_MODE=token" not in cmd:
            out.append(Finding("error", "auth", f"`{_short(cmd)}` starts Ray without token auth: prefix it with "
                                                "RAY_AUTH_MODE=token"))
    mounts = config.get("file_mounts") or {}
    if not any(str(k).rstrip("/").endswith(".ray/auth_token") for k in mounts):
        out.append(Finding("error", "auth", "file_mounts does not copy the auth token to the nodes (ray up does not "
                                            "distribute it): add  ~/.ray/auth_token: ~/.ray/auth_token"))
    for what, pattern in SECRETS.items():
        if pattern.search(text):
            out.append(Finding("error", "secrets", f"the file contains {what}: use instance roles or service "
                                                   "accounts, and environment variables on the nodes"))
    for name, node in (config.get("available_node_types") or {}).items():
        if not (node or {}).get("resources"):
            out.append(Finding("error", "resources", f"node type {name!r} declares no resources: the autoscaler "
                                                     "cannot plan it (or scale it from 0); add e.g. {CPU: 8, GPU: 1}"))
    if provider.get("type") == "aws":
        out += _aws_network(config)
    elif provider.get("type") == "gcp":
        out += _gcp_network(config)
    return out


def _aws_network(config: dict) -> list[Finding]:
    provider = config["provider"]
    out = []
    own_groups = all(((n or {}).get("node_config") or {}).get("SecurityGroupIds")
                     for n in (config.get("available_node_types") or {}).values())
    if not own_groups:
        out.append(Finding("warning", "network", "Ray creates the security group and always opens SSH to 0.0.0.0/0 "
                                                 "in it; to limit SSH to your operator CIDR, create the group "
                                                 "yourself and set node_config.SecurityGroupIds"))
    for rule in (provider.get("security_group") or {}).get("IpPermissions") or []:
        ports = f"{rule.get('FromPort', 'all')}-{rule.get('ToPort', 'all')}"
        ssh_only = rule.get("IpProtocol") == "tcp" and rule.get("FromPort") == 22 and rule.get("ToPort") == 22
        ranges = [r.get("CidrIp") for r in rule.get("IpRanges", [])] + [r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])]
        for cidr in filter(None, ranges):
            if _is_world(cidr) and not ssh_only:
                out.append(Finding("error", "network", f"ports {ports}/{rule.get('IpProtocol')} are open to {cidr}: "
                                                       "only SSH may face the internet (use `cluster dashboard`)"))
    return out


def _gcp_network(config: dict) -> list[Finding]:
    out = []
    for name, node in (config.get("available_node_types") or {}).items():
        interfaces = ((node or {}).get("node_config") or {}).get("networkInterfaces") or []
        networks = [i.get("network") or i.get("subnetwork") or "" for i in interfaces]
        if not networks or any(n.rstrip("/").endswith("/default") or n == "default" for n in networks):
            out.append(Finding("error", "network", f"node type {name!r} uses the default network, whose firewall "
                                                   "allows more than SSH: give it networkInterfaces on your own "
                                                   "network (see the header of cluster/gcp-gpu.yaml)"))
    return out


def _is_world(cidr: str) -> bool:
    try:
        return ipaddress.ip_network(cidr, strict=False).prefixlen == 0
    except ValueError:
        return False


def _short(cmd: str) -> str:
    return cmd if len(cmd) < 70 else cmd[:67] + "..."


def report(path: str, findings: list[Finding]) -> dict:
    errors = [f for f in findings if f.level == "error"]
    for f in findings:
        print(f"{f.level:7} {f.check:9} {f.message}", flush=True)
    verdict = "refused" if errors else "ok"
    print(f"{path}: {verdict} ({len(errors)} errors, {len(findings) - len(errors)} warnings)", flush=True)
    return {"file": str(path), "ok": not errors, "findings": [asdict(f) for f in findings]}


# ---- thin wrappers over Ray's launcher ------------------------------------------------------


def ensure_token() -> Path:
    """The token `ray up` copies to the nodes (file_mounts); created once, readable only by you."""
    if not TOKEN_PATH.exists():
        import secrets

        TOKEN_PATH.parent.mkdir(parents=True, exist_ok=True)
        TOKEN_PATH.write_text(secrets.token_hex(32))
        TOKEN_PATH.chmod(0o600)
        print(f"created a Ray auth token in {TOKEN_PATH} (mode 600)", flush=True)
    return TOKEN_PATH


RAY_COMMANDS = {
    "up": ["up", "--yes"],
    "down": ["down", "--yes"],
    "dashboard": ["dashboard"],
    "attach": ["attach"],
}
NEXT = {
    "up": "orchestrator cluster dashboard {f}   # then: orchestrator submit jobs/digits-cnn.yaml "
          "--address http://127.0.0.1:8265 --wait",
    "down": "orchestrator cluster up {f}   # when you need it again",
    "dashboard": "",
    "attach": "",
}


def launcher(action: str, path: str) -> int:
    """Run Ray's own launcher command on a file that passed validation."""
    findings = validate(path)
    if action == "up" and any(f.level == "error" for f in findings):
        report(path, findings)
        raise ConfigError(f"{path} fails validation: fix the errors above before `up`")
    ensure_token()
    ray_cli = str(Path(sys.executable).parent / "ray")
    cmd = [ray_cli, *RAY_COMMANDS[action], path]
    print("$ " + shlex.join(cmd), flush=True)
    code = subprocess.call(cmd, env={**os.environ, "RAY_AUTH_MODE": "token"})
    if code == 0 and NEXT[action]:
        print("next: " + NEXT[action].format(f=path), flush=True)
    return code
