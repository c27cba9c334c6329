"""Pydantic's validation errors as a user fixes them: the field by its dotted path (a union's tag left out),
the nearest valid key for a typo, the section where a misplaced key goes, the key here for a name another tool
uses, and what a value of the wrong type should be written as; and the walk of the schema that needs (a
union's members by tag, a section chosen by its name), which config.py's shorthand `model: cnn` uses too."""

from __future__ import annotations

import difflib
import math
import types
import typing
from typing import Annotated, Any, Union

from pydantic import BaseModel


def explain(err: dict, root: type[BaseModel]) -> str:
    loc = [str(p) for p in err["loc"]]
    where = ".".join(_walk(loc, root)[1])
    if err["type"] == "extra_forbidden":
        cls = _walk(loc[:-1], root)[0]
        valid = list(cls.model_fields) if isinstance(cls, type) and issubclass(cls, BaseModel) else []
        kinds = tagged_union_members(_walk(loc[:-2], root)[0]) or {}
        if owners := [tag for tag, member in kinds.items() if loc[-1] in member.model_fields]:
            section, kind = ".".join(_walk(loc[:-2], root)[1]), loc[-2]  # e.g. mlp's hidden_sizes with name: cnn
            have = "has" if len(owners) == 1 else "have"
            return (f"unknown key {where!r}: {section} {kind!r} has no {loc[-1]!r} ({' and '.join(owners)} {have} it); "
                    f"the keys of {section} {kind!r}: {', '.join(valid)}. On the command line, set the whole "
                    f"section: '{section}={{name: {kind}}}'")
        hint = (_other_name(loc[-1], where, valid) or paths_to(loc[-1], root)  # train.lr: optim.lr
                or difflib.get_close_matches(loc[-1], valid, n=1))
        suggestion = f"; did you mean {hint[0]!r}?" if hint else f"; valid keys: {', '.join(valid)}"
        return f"unknown key {where!r}{suggestion}"
    kinds = list(tagged_union_members(_walk(loc, root)[0]) or {})  # a section chosen by its name (model, data)
    got = err.get("input")
    if kinds and err["type"] == "missing":
        return f"{where} is missing: add a {where} section with a name, one of {kinds}"
    if kinds and err["type"] == "model_attributes_type":  # model=cnn
        return f"{where} is a section, not a value: set {where}.name, one of {kinds}"
    if err["type"] == "union_tag_not_found":
        glued = [k for k in got if ":" in str(k)] if isinstance(got, dict) else []  # {name:cnn} is one key in YAML
        typed = [k for k in got if OTHER_NAMES.get(str(k).lower()) == "name"] if isinstance(got, dict) else []
        hint = (f" (YAML reads {glued[0]!r} as one key: put a space after the colon)" if glued else
                f" (it has {typed[0]!r}: the kind goes in name, {where}: {{name: {got[typed[0]]}}})" if typed else "")
        return f"{where}.name is missing: one of {kinds}{hint}"
    if err["type"] == "missing":
        return f"{where}: required field is missing"
    if err["type"] == "union_tag_invalid":
        return f"{where}.name: {err['ctx']['tag']!r} is not one of {err['ctx']['expected_tags']}"
    shown = "" if isinstance(got, dict) else f" (got {got!r})"
    if err["type"] in ("float_type", "int_type") and _numeric_text(got):  # '0.01', or 1e-3 read by YAML 1.1
        shown = (f" (got {got!r}: text to a YAML 1.1 reader, as Ray's `serve deploy` is; write {float(got)!r})"
                 if "e" in got.lower() and "." not in got else f" (got {got!r}: text; write it without quotes)")
    if err["type"] == "list_type" and isinstance(got, (int, float, str)):  # hidden_sizes: 64
        shown = f" (got {got!r}: write [{got}])"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{where}: {msg}{shown}" if where else f"{msg}{shown}"


# Keys that other tools (PyTorch Lightning, Keras, Hugging Face's Trainer, scikit-learn, Ludwig) give what a key
# here does: the key here, a section's own (bare) or a dotted path
OTHER_NAMES = {
    "learning_rate": "optim.lr", "optimizer": "optim", "lr_scheduler": "optim.schedule", "scheduler": "optim.schedule",
    "beta1": "optim.betas", "beta2": "optim.betas", "l2": "optim.weight_decay",
    "l2_regularization": "optim.weight_decay", "l1_regularization": "optim.l1", "max_grad_norm": "optim.grad_clip_norm",
    "gradient_clip_val": "optim.grad_clip_norm",
    "clip_grad_norm": "optim.grad_clip_norm", "accumulate_grad_batches": "optim.grad_accum_steps",
    "gradient_accumulation_steps": "optim.grad_accum_steps", "warmup_steps": "optim.warmup_epochs",
    "batch_size": "train.batch_size_per_worker", "per_device_train_batch_size": "train.batch_size_per_worker",
    "num_epochs": "train.epochs", "max_epochs": "train.epochs", "num_train_epochs": "train.epochs",
    "device": "train.use_gpu", "gpus": "train.use_gpu", "accelerator": "train.use_gpu", "devices": "train.num_workers",
    "patience": "train.early_stopping_patience", "mixed_precision": "train.precision", "fp16": "train.precision",
    "bf16": "train.precision", "amp": "train.precision", "output_dir": "storage.path", "checkpoint_dir": "storage.path",
    "label": "data.label_column", "target": "data.label_column", "target_column": "data.label_column",
    "features": "data.feature_columns", "validation_split": "data.val_fraction", "val_split": "data.val_fraction",
    "val_size": "data.val_fraction", "test_size": "data.test_fraction", "test_split": "data.test_fraction",
    "dataset": "data", "type": "name", "architecture": "model.name", "arch": "model.name",
}


def _other_name(key: str, where: str, valid: list[str]) -> list[str]:
    """The key here for a key another tool names so (OTHER_NAMES), where there is one: a section's own key
    by its dotted path."""
    mine = OTHER_NAMES.get(key.lower())
    if mine is None:
        return []
    if "." not in mine and mine in valid:  # this section's own (type: name)
        section = where.rpartition(".")[0]
        return [f"{section}.{mine}" if section else mine]
    return [mine]


def named_section(field) -> bool:
    """Whether a field is a section chosen by its name: a kind of several (model, data) or one with a name."""
    if field is None:
        return False
    section = required(field.annotation)
    return tagged_union_members(section) is not None or (
        isinstance(section, type) and issubclass(section, BaseModel) and "name" in section.model_fields)


def _numeric_text(value) -> bool:
    try:
        return isinstance(value, str) and math.isfinite(float(value))
    except ValueError:
        return False


def tagged_union_members(annotation) -> dict[str, type[BaseModel]] | None:
    """For a discriminated union annotation, {tag: section class}."""
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is Union:
        members = typing.get_args(annotation)
        if all(isinstance(m, type) and issubclass(m, BaseModel) for m in members):
            return {typing.get_args(m.model_fields["name"].annotation)[0]: m for m in members}
    return None


def _walk(loc: list[str], root: type[BaseModel]) -> tuple[Any, list[str]]:
    """Follow a pydantic error location: (the section class it ends in, its parts minus union tags)."""
    cls: Any = root
    shown = []
    for part in loc:
        is_section = isinstance(cls, type) and issubclass(cls, BaseModel)
        tags = None if is_section else tagged_union_members(cls)
        if tags is not None:  # a union tag (e.g. 'cnn' in model.cnn.channels) is not a key the user wrote
            cls = tags.get(part)
            continue
        shown.append(part)
        fields = cls.model_fields if is_section else {}
        cls = required(fields[part].annotation) if part in fields else None
    return cls, shown


def paths_to(key: str, section: Any, prefix: str = "") -> list[str]:
    """The dotted paths where `key` is a field, in this section or the sections inside it."""
    sections = [section] if isinstance(section, type) and issubclass(section, BaseModel) else list(
        (tagged_union_members(section) or {}).values())
    found = []
    for cls in sections:
        for name, field in cls.model_fields.items():
            found += [f"{prefix}{name}"] if name == key else []
            found += paths_to(key, required(field.annotation), f"{prefix}{name}.")
    return list(dict.fromkeys(found))  # union members share fields: each path once


def required(annotation):
    """An optional section's annotation (`TuneConfig | None`) without the None."""
    if typing.get_origin(annotation) in (Union, types.UnionType) and type(None) in typing.get_args(annotation):
        present = [m for m in typing.get_args(annotation) if m is not type(None)]
        return present[0] if len(present) == 1 else Union[tuple(present)]
    return annotation
