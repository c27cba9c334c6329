"""The model registry: numbered versions of each model, aliases, gated promotion.

    <registry>/<model>/versions/0003/checkpoint/   a verified copy of the checkpoint
    <registry>/<model>/versions/0003/record.json   metrics, lineage, gates, source; written last
    <registry>/<model>/aliases.json                {"aliases": {"production": 3, "candidate": 4},
                                                    "history": {"production": [1, 2]}, "log": [...]}

The registry is a directory (local or s3://, gs://), so it needs no server and lives beside
the runs. A version without record.json was never finished and is not listed. A model is
referred to as `models:/NAME@ALIAS` or `models:/NAME/VERSION` (MLflow's notation).

Promotion to `production` is gated by the thresholds recorded with the version (from the
config's `registry` section): each min/max metric, and not worse than the version in
production now. `rollback` moves an alias back to the version it held before.

Concurrent writers: a local registry numbers versions with an exclusive mkdir; object stores
have no such primitive here, so two runs registering the same model at the same moment on
s3:// can race. Give concurrent pipelines different model names.
"""

from __future__ import annotations

import json
import posixpath
import re

import pyarrow.fs as pafs

from orchestrator import lineage, storage
from orchestrator.config import LOWER_IS_BETTER, RegistryConfig
from orchestrator.errors import ConfigError

CANDIDATE, PRODUCTION = "candidate", "production"
REF = re.compile(r"^models:/(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:@(?P<alias>[A-Za-z][A-Za-z0-9_-]*)|/v?(?P<version>\d+))$")
ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def is_ref(uri: str) -> bool:
    return uri.startswith("models:/")


def parse_ref(uri: str) -> tuple[str, str]:
    """`models:/NAME@ALIAS` or `models:/NAME/VERSION` -> (name, alias or version)."""
    m = REF.match(uri)
    if not m:
        raise ConfigError(f"{uri!r} is not a model reference: use models:/NAME@ALIAS or models:/NAME/VERSION")
    return m["name"], m["alias"] or m["version"]


def gates(cfg: RegistryConfig) -> dict:
    return cfg.model_dump(include={"min_metrics", "max_metrics", "compare_metric", "not_worse_than_production",
                                   "tolerance"})


def check_gates(record: dict, production: dict | None) -> list[str]:
    """Why `record` may not become production (empty: it may)."""
    g, metrics = record.get("gates") or {}, record.get("metrics") or {}
    reasons = []
    for name, low in (g.get("min_metrics") or {}).items():
        if name not in metrics or metrics[name] < low:
            reasons.append(f"{name} {_fmt(metrics.get(name))} is below the required {low}")
    for name, high in (g.get("max_metrics") or {}).items():
        if name not in metrics or metrics[name] > high:
            reasons.append(f"{name} {_fmt(metrics.get(name))} is above the allowed {high}")
    key = g.get("compare_metric", "test_accuracy")
    if g.get("not_worse_than_production", True) and production and production["version"] != record["version"]:
        new, old = metrics.get(key), (production.get("metrics") or {}).get(key)
        if new is not None and old is not None:
            lower = key in LOWER_IS_BETTER
            worse = new > old + g.get("tolerance", 0) if lower else new < old - g.get("tolerance", 0)
            if worse:
                note = "" if _same_data(record, production) else " (note: they were tested on different data)"
                reasons.append(f"{key} {_fmt(new)} is worse than production v{production['version']}'s {_fmt(old)}{note}")
    return reasons


def _same_data(a: dict, b: dict) -> bool:
    return (a.get("lineage") or {}).get("data_fingerprint") == (b.get("lineage") or {}).get("data_fingerprint")


def _fmt(v) -> str:
    return "missing" if v is None else f"{v:.4f}"


class Registry:
    def __init__(self, root: str, endpoint_url: str | None = None, region: str | None = None):
        self.root = root if storage.is_remote(root) else storage.join(root)  # local: absolute
        self.endpoint_url, self.region = endpoint_url, region
        self.fs, self.path = storage.filesystem(root, endpoint_url, region)

    # ---- reading ----------------------------------------------------------------------------

    def models(self) -> list[str]:
        entries = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        return sorted(e.base_name for e in entries if e.type == pafs.FileType.Directory)

    def versions(self, model: str) -> list[dict]:
        """Finished versions, oldest first."""
        base = posixpath.join(self.path, model, "versions")
        entries = self.fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        numbers = sorted(int(e.base_name) for e in entries if e.base_name.isdigit())
        records = (self._read_json(posixpath.join(base, f"{n:04d}", "record.json")) for n in numbers)
        return [r for r in records if r is not None]

    def aliases(self, model: str) -> dict:
        return self._read_json(posixpath.join(self.path, model, "aliases.json")) or {"aliases": {}, "history": {},
                                                                                      "log": []}

    def resolve(self, model: str, ref: str | int) -> dict:
        """The record of `ref`: a version number (3, "3", "v3") or an alias ("production")."""
        ref = str(ref)
        models = self.models()
        if model not in models:
            raise ConfigError(f"no model {model!r} in the registry {self.root} (models: {', '.join(models) or 'none'})")
        aliases = self.aliases(model)["aliases"]
        if ref.lstrip("v").isdigit():
            version = int(ref.lstrip("v"))
        elif ref in aliases:
            version = aliases[ref]
        else:
            hint = (f"; {ref!r} is a model's name: give it as --model {ref}, and a version (3, v3) or an alias as the "
                    "reference" if ref in models else "")
            raise ConfigError(f"model {model!r} has no alias {ref!r} (aliases: {', '.join(aliases) or 'none yet'})"
                              + hint)
        record = self._read_json(self._version_path(model, version, "record.json"))
        if record is None:
            listed = [r["version"] for r in self.versions(model)]
            raise ConfigError(f"model {model!r} has no version {version} (versions: {listed})")
        return {**record, "aliases": [a for a, v in aliases.items() if v == version]}

    def resolve_uri(self, uri: str) -> dict:
        """The record a `models:/NAME@ALIAS` or `models:/NAME/VERSION` reference points to."""
        return self.resolve(*parse_ref(uri))

    def model_name(self, given: str | None) -> str:
        """The model a command means: `given`, or the only model in the registry."""
        if given:
            return given
        models = self.models()
        if len(models) != 1:
            raise ConfigError(f"the registry {self.root} holds {len(models)} models "
                              f"({', '.join(models) or 'none'}): name one with --model")
        return models[0]

    # ---- writing ----------------------------------------------------------------------------

    def register(self, model: str, checkpoint_uri: str, *, metrics: dict, gates: dict, source: dict,
                 checkpoint_endpoint_url: str | None = None) -> dict:
        """Copy a checkpoint in as the next version, with its record; alias it `candidate`."""
        from orchestrator.checkpoint import read_checkpoint  # imports torch, which listing and aliases do without

        source_ckpt = read_checkpoint(checkpoint_uri, checkpoint_endpoint_url)  # only verified checkpoints get in
        version = self._new_version(model)
        dest = self._version_path(model, version, "checkpoint")
        src_fs, src_path = storage.filesystem(checkpoint_uri, checkpoint_endpoint_url)
        self.fs.create_dir(dest, recursive=True)
        pafs.copy_files(src_path, dest, source_filesystem=src_fs, destination_filesystem=self.fs)
        checkpoint = storage.uri(self.fs, dest)
        read_checkpoint(checkpoint, self.endpoint_url)  # the copy verifies too
        record = {
            "model": model,
            "version": version,
            "checkpoint": checkpoint,
            "registered_at": lineage.now(),
            "metrics": metrics,
            "lineage": source_ckpt.lineage() or {},
            "gates": gates,
            "source": {"checkpoint": checkpoint_uri, **source},
        }
        self._write_json(self._version_path(model, version, "record.json"), record)  # last: the version exists now
        self._move_alias(model, CANDIDATE, version, action="register")
        return {**record, "aliases": [CANDIDATE]}

    def promote(self, model: str, ref: str | int, alias: str = PRODUCTION, force: bool = False) -> dict:
        """Point `alias` at a version. For production, the version's gates must pass (unless force)."""
        if not ALIAS.match(alias) or alias.isdigit():
            raise ConfigError(f"alias {alias!r}: use letters, digits, - and _, starting with a letter")
        record = self.resolve(model, ref)
        current = self.aliases(model)["aliases"].get(alias)
        reasons = []
        if alias == PRODUCTION:
            production = self.resolve(model, current) if current is not None else None
            reasons = check_gates(record, production)
        if reasons and not force:
            return {"model": model, "version": record["version"], "alias": alias, "promoted": False,
                    "previous": current, "reasons": reasons}
        if current != record["version"]:
            self._move_alias(model, alias, record["version"], action="promote", forced=bool(reasons),
                             reasons=reasons)
        return {"model": model, "version": record["version"], "alias": alias, "promoted": True, "previous": current,
                "reasons": reasons, "forced": bool(reasons)}

    def rollback(self, model: str, alias: str = PRODUCTION) -> dict:
        """Point `alias` back at the version it held before the latest move."""
        state = self.aliases(model)
        history = state["history"].get(alias) or []
        if not history:
            raise ConfigError(f"alias {alias!r} of model {model!r} has no earlier version to roll back to")
        current, back = state["aliases"].get(alias), history[-1]
        self._move_alias(model, alias, back, action="rollback", pop_history=True)
        return {"model": model, "alias": alias, "version": back, "previous": current}

    def _move_alias(self, model: str, alias: str, version: int, action: str, pop_history: bool = False,
                    **details) -> None:
        state = self.aliases(model)
        current = state["aliases"].get(alias)
        history = state["history"].setdefault(alias, [])
        if pop_history:
            history.pop()
        elif current is not None and current != version:
            history.append(current)
        state["aliases"][alias] = version
        state["log"].append({"at": lineage.now(), "action": action, "alias": alias, "from": current, "to": version,
                             **details})
        self._write_json(posixpath.join(self.path, model, "aliases.json"), state)

    def _new_version(self, model: str) -> int:
        base = posixpath.join(self.path, model, "versions")
        self.fs.create_dir(base, recursive=True)
        entries = self.fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        version = max((int(e.base_name) for e in entries if e.base_name.isdigit()), default=0) + 1
        if isinstance(self.fs, pafs.LocalFileSystem):
            import os

            while True:  # an exclusive mkdir: two registering runs never get the same number
                try:
                    os.mkdir(posixpath.join(base, f"{version:04d}"))
                    break
                except FileExistsError:
                    version += 1
        return version

    def _version_path(self, model: str, version: int, *parts: str) -> str:
        return posixpath.join(self.path, model, "versions", f"{int(version):04d}", *parts)

    def _read_json(self, path: str) -> dict | None:
        try:
            with self.fs.open_input_stream(path) as f:
                return json.loads(f.read())
        except FileNotFoundError:
            return None
        except OSError as e:
            if "not found" in str(e).lower() or "no such file" in str(e).lower():
                return None
            raise

    def _write_json(self, path: str, obj: dict) -> None:
        """Written aside, then moved into place: a reader never sees half a file (a rename, locally)."""
        self.fs.create_dir(posixpath.dirname(path), recursive=True)
        with self.fs.open_output_stream(path + ".part") as f:
            f.write(json.dumps(obj, indent=2, sort_keys=True).encode())
        self.fs.move(path + ".part", path)
