"""The checkpoint format: a directory of safetensors and JSON, sealed by a sha256 manifest.

    model.safetensors      weights (and the normalization buffers); never pickle
    optimizer.safetensors  optimizer tensors (training checkpoints, for resume)
    state.json             epoch, step, metric history, optimizer hyperparameters
    config.yaml            the resolved experiment config
    model.json             input shape, label names, normalization, data fingerprint
    metrics.json           metrics at this checkpoint
    lineage.json           config hash, data URI and fingerprint, code and library versions (lineage.py)
    manifest.json          sha256 and size of every file above; written last

A sharded checkpoint (train.strategy: fsdp) has no model.safetensors or optimizer.safetensors:
each worker writes its own part, shard-RRRRR-of-WWWWW.safetensors, and rank 0's manifest lists
every shard's sha256. Reading one joins the parts back into the full model (the serving
format; `export` writes it as a plain checkpoint).

A directory without a manifest was never finished; one whose files do not match it was
tampered with or corrupted. Both are refused on read, locally and on s3://.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from orchestrator import storage
from orchestrator.config import ExperimentConfig, config_from_dict, load_yaml, save_config
from orchestrator.errors import CheckpointError, ConfigError, StorageError
from orchestrator.models import model_for

FORMAT = "orchestrator-checkpoint/1"
MANIFEST = "manifest.json"
REQUIRED = ("config.yaml", "model.json", "metrics.json")
WEIGHTS = "model.safetensors"


def shard_name(rank: int, world: int) -> str:
    return f"shard-{rank:05d}-of-{world:05d}.safetensors"


def write_checkpoint(
    directory: str,
    *,
    model: torch.nn.Module | None,
    config: ExperimentConfig,
    model_info: dict,
    metrics: dict,
    optimizer: torch.optim.Optimizer | None = None,
    train_state: dict | None = None,
    lineage: dict | None = None,
    shards: dict[str, dict] | None = None,
) -> None:
    """Write a checkpoint into a local directory; the manifest goes last. A sharded checkpoint
    passes model=None and `shards`: {shard file name: {"sha256", "bytes"}} of every worker's
    write_shard (the optimizer's hyperparameters still come from `optimizer`)."""
    files: dict[str, bytes] = {
        "config.yaml": save_config(config).encode(),
        "model.json": _json(model_info),
        "metrics.json": _json(metrics),
    }
    if model is not None:
        files[WEIGHTS] = save_safetensors({k: v.contiguous() for k, v in model.state_dict().items()})
    if optimizer is not None:  # sharded: the tensors are in the shards, the hyperparameters here
        tensors, optim_meta = _flatten_optimizer(optimizer.state_dict(), with_tensors=shards is None)
        if shards is None:
            files["optimizer.safetensors"] = save_safetensors(tensors)
        files["state.json"] = _json({**(train_state or {}), "optimizer": optim_meta})
    if lineage is not None:
        files["lineage.json"] = _json(lineage)
    os.makedirs(directory, exist_ok=True)
    for name, data in files.items():
        Path(directory, name).write_bytes(data)
    listed = {name: {"sha256": hashlib.sha256(d).hexdigest(), "bytes": len(d)} for name, d in files.items()}
    manifest = {"format": FORMAT, "files": {**listed, **(shards or {})}}
    if shards:
        manifest["shards"] = sorted(shards)
    Path(directory, MANIFEST).write_bytes(_json(manifest))


def write_shard(directory: str, rank: int, world: int, model: torch.nn.Module,
                optimizer: torch.optim.Optimizer | None) -> tuple[str, dict]:
    """This worker's part of an FSDP model and its optimizer state: the local shard of each sharded
    tensor (rows of dim 0, in rank order), and, from rank 0 only, the tensors every worker holds whole.
    Returns (file name, its manifest entry)."""
    tensors = _local_parts("model", model.state_dict(), rank)
    if optimizer is not None:
        for pid, state in optimizer.state_dict()["state"].items():
            tensors.update(_local_parts(f"optim/{pid}", state, rank))
    data = save_safetensors(tensors)
    name = shard_name(rank, world)
    os.makedirs(directory, exist_ok=True)
    Path(directory, name).write_bytes(data)
    return name, {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def _local_parts(prefix: str, state: dict, rank: int) -> dict[str, torch.Tensor]:
    from torch.distributed.tensor import DTensor, Shard

    out = {}
    for key, value in state.items():
        if not torch.is_tensor(value):
            continue  # scalars travel in state.json
        if isinstance(value, DTensor):
            if value.placements == (Shard(0),):
                out[f"{prefix}/{key}#shard"] = value.to_local().detach().contiguous().cpu()
                continue
            value = value.full_tensor()
        if rank == 0:
            out[f"{prefix}/{key}"] = value.detach().contiguous().cpu()
    return out


@dataclass
class Checkpoint:
    """A verified checkpoint read into memory."""

    uri: str
    config: ExperimentConfig
    model_info: dict
    metrics: dict
    files: dict[str, bytes]

    @property
    def shards(self) -> list[str]:
        return sorted(n for n in self.files if n.startswith("shard-"))

    def weights_digest(self) -> str:
        """Names the weights, wherever they are stored (a sharded checkpoint: its shards' digest)."""
        if WEIGHTS in self.files:
            return hashlib.sha256(self.files[WEIGHTS]).hexdigest()
        h = hashlib.sha256()
        for name in self.shards:
            h.update(hashlib.sha256(self.files[name]).digest())
        return h.hexdigest()

    def model_state(self) -> dict[str, torch.Tensor]:
        if WEIGHTS in self.files:
            return self._tensors(WEIGHTS)
        return self._joined("model")

    def model(self) -> torch.nn.Module:
        info = self.model_info
        model = model_for(self.config.model, info)
        try:
            model.load_state_dict(self.model_state(), strict=True)
        except RuntimeError as e:
            raise CheckpointError(f"{self.uri}: weights do not fit the model in its config ({e})") from None
        return model.eval()

    def lineage(self) -> dict | None:
        return json.loads(self.files["lineage.json"]) if "lineage.json" in self.files else None

    def train_state(self) -> dict | None:
        return json.loads(self.files["state.json"]) if "state.json" in self.files else None

    def optimizer_state(self) -> dict:
        """The full optimizer state dict (torch's format: state by parameter index)."""
        meta = self.train_state()["optimizer"]
        if "optimizer.safetensors" in self.files:
            tensors = self._tensors("optimizer.safetensors")
        else:
            tensors = {k.replace("/", ".", 1): v for k, v in self._joined("optim").items()}
        return _unflatten_optimizer(tensors, meta)

    def _joined(self, prefix: str) -> dict[str, torch.Tensor]:
        """Tensors under prefix/ of a sharded checkpoint, each sharded one joined along dim 0 in rank order."""
        parts: dict[str, list[torch.Tensor]] = {}
        whole: dict[str, torch.Tensor] = {}
        for name in self.shards:
            for key, tensor in self._tensors(name).items():
                head, _, rest = key.partition("/")
                if head != prefix:
                    continue
                if rest.endswith("#shard"):
                    parts.setdefault(rest.removesuffix("#shard"), []).append(tensor)
                else:
                    whole[rest] = tensor
        return {**whole, **{k: torch.cat(v) for k, v in parts.items()}}

    def _tensors(self, name: str) -> dict[str, torch.Tensor]:
        try:
            return load_safetensors(self.files[name])  # parses a header and raw buffers: no code runs
        except Exception as e:  # safetensors raises its own error type for malformed input
            raise CheckpointError(f"{self.uri}: {name} is not a valid safetensors file ({e})") from None


def read_checkpoint(uri: str, endpoint_url: str | None = None) -> Checkpoint:
    """Read and verify every file against the manifest; CheckpointError if anything is off."""
    fs, root, listed = _manifest(uri, endpoint_url)
    read = lambda name: _read(fs, posixpath.join(root, name), uri)  # noqa: E731
    files = {}
    for name, entry in listed.items():
        try:
            data = read(name)
        except FileNotFoundError:
            raise CheckpointError(f"{uri}: {name} is listed in the manifest but missing") from None
        if hashlib.sha256(data).hexdigest() != entry.get("sha256"):
            raise CheckpointError(f"{uri}: {name} does not match its sha256 in the manifest (tampered or corrupted)")
        files[name] = data
    try:
        config = config_from_dict(load_yaml(files["config.yaml"]), source=f"{uri}/config.yaml")
    except ConfigError as e:
        raise CheckpointError(f"checkpoint config is invalid: {e}") from None
    return Checkpoint(uri, config, json.loads(files["model.json"]), json.loads(files["metrics.json"]), files)


def is_complete(uri: str, endpoint_url: str | None = None) -> bool:
    """Whether every file the manifest lists is there at its full size: what a write or copy cut
    short fails. Reads only the manifest; read_checkpoint still verifies the contents."""
    try:
        fs, root, listed = _manifest(uri, endpoint_url)
    except CheckpointError:
        return False
    infos = fs.get_file_info([posixpath.join(root, name) for name in listed])
    return all(info.size == entry.get("bytes") for info, entry in zip(infos, listed.values()))


def export(uri: str, destination: str, endpoint_url: str | None = None) -> str:
    """Write a checkpoint's model as a plain serving checkpoint (model.safetensors, no optimizer
    state): what a sharded checkpoint becomes for serving and the registry. Returns `destination`."""
    import tempfile

    ckpt = read_checkpoint(uri, endpoint_url)
    try:
        fs, path = storage.filesystem(destination, endpoint_url)
        taken = fs.get_file_info(posixpath.join(path, MANIFEST)).type.name != "NotFound"
    except OSError as e:
        raise StorageError(f"cannot reach {destination}: {e}") from None
    if taken:  # never write over a checkpoint
        raise StorageError(f"{destination} already holds a checkpoint: choose a new destination")
    with tempfile.TemporaryDirectory() as tmp:
        write_checkpoint(tmp, model=ckpt.model(), config=ckpt.config, model_info=ckpt.model_info,
                         metrics=ckpt.metrics, lineage=ckpt.lineage())
        try:
            storage.upload_dir(tmp, destination, endpoint_url)
        except OSError as e:
            raise StorageError(f"cannot write {destination}: {e}") from None
    return destination


def _manifest(uri: str, endpoint_url: str | None) -> tuple[object, str, dict]:
    """(filesystem, root, the manifest's files), the manifest checked: format, required files, safe names."""
    try:
        fs, root = storage.filesystem(uri, endpoint_url)
    except StorageError as e:
        raise CheckpointError(str(e)) from None
    try:
        manifest = json.loads(_read(fs, posixpath.join(root, MANIFEST), uri))
    except (FileNotFoundError, CheckpointError) as e:  # CheckpointError: unreadable, as a file in its place is
        raise CheckpointError(_not_a_checkpoint(fs, root, uri, e)) from None
    except json.JSONDecodeError:
        raise CheckpointError(f"{uri}/{MANIFEST} is not valid JSON: the checkpoint is corrupted") from None
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{uri}: unsupported checkpoint format {manifest.get('format')!r} (expected {FORMAT})")
    listed = manifest.get("files", {})
    missing = [name for name in REQUIRED if name not in listed]
    if WEIGHTS not in listed and not manifest.get("shards"):
        missing.append(WEIGHTS)
    if missing:
        raise CheckpointError(f"{uri}: manifest lacks required files {missing}")
    unsafe = [name for name in listed if "/" in name or name.startswith(".")]
    if unsafe:
        raise CheckpointError(f"{uri}: manifest names an unsafe path {unsafe[0]!r}")
    return fs, root, listed


def _not_a_checkpoint(fs, root: str, uri: str, e: Exception) -> str:
    """Why `uri`'s manifest could not be read (`e`): no such path, a file, or a directory without one."""
    try:
        kind = fs.get_file_info(root).type.name
    except OSError:
        kind = None
    if kind == "NotFound":
        return f"checkpoint {uri} does not exist: give a checkpoint directory (a run's, as train printed it) or URI"
    if kind == "File":
        return (f"{uri} is a file, not a checkpoint: give a checkpoint directory (the one holding {MANIFEST} and "
                f"{WEIGHTS}, as train printed it) or URI")
    if isinstance(e, CheckpointError):
        return str(e)
    return f"{uri} has no {MANIFEST}: not an orchestrator checkpoint, or its writing was interrupted"


def _read(fs, path: str, uri: str) -> bytes:
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise
    except OSError as e:
        if "not found" in str(e).lower() or "no such file" in str(e).lower():
            raise FileNotFoundError(path) from None
        raise CheckpointError(f"cannot read checkpoint {uri}: {str(e).splitlines()[0]}") from None


def _json(obj) -> bytes:
    return json.dumps(obj, indent=2, sort_keys=True).encode()


def _flatten_optimizer(state_dict: dict, with_tensors: bool = True) -> tuple[dict[str, torch.Tensor], dict]:
    """Optimizer state as flat tensors for safetensors (unless with_tensors is false) plus JSON-able metadata."""
    tensors, scalars = {}, {}
    for pid, state in state_dict["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                if with_tensors:
                    tensors[f"{pid}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, tensor in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = tensor
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}
