"""The resumable checkpoint: one ``checkpoint.safetensors``, written atomically.

Weights (``model.*``), optimizer state (``optim.<param>.<name>``; an objective's own optimizers,
such as the VAE-GAN's discriminator's, ``optim_<optimizer>.<param>.<name>``) and RNG states
(``rng.<name>``) are its tensors; everything else (epoch, param groups, history, precision, ...)
is JSON in its safetensors metadata. One file is one atomic unit: a kill at any moment leaves the previous
checkpoint or the new one, never weights of one epoch with metadata of another.

Reading validates every piece against the model, optimizer and generators it is about to
restore, and against the configuration, before any of them is touched: a crafted optimizer
tensor of the wrong size would otherwise reach fused Adam, which writes past it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as st_save

from vaekit.errors import RunDirError
from vaekit.io.files import json_dumps
from .store import check_history, check_tensors, first_line, is_int, is_number, parse_json

CHECKPOINT_FORMAT = "vaekit-checkpoint"
CHECKPOINT_VERSION = "1"
METADATA_KEYS = {"format", "format_version", "meta"}  # the safetensors header's metadata
# the JSON record: what encode() writes (and the trainer's meta: precision, history)
RECORD_KEYS = {"epoch", "precision", "history", "param_groups", "optim_state", "extra_optimizers"}
# Optimizer flags that say how the update is computed, not what it is: they follow the
# optimizer of the resuming process (resuming on another device may change them).
IMPLEMENTATION_KEYS = {"foreach", "fused", "capturable", "differentiable"}
# The per-parameter state each optimizer keeps ("step" is a scalar, the rest param-shaped).
STATE_KEYS = {torch.optim.Adam: {"step", "exp_avg", "exp_avg_sq"},
              torch.optim.AdamW: {"step", "exp_avg", "exp_avg_sq"}}


def state_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def encode(epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
           generators: dict[str, torch.Generator], meta: dict[str, Any],
           extra: dict[str, torch.optim.Optimizer] | None = None) -> bytes:
    """The bytes of ``checkpoint.safetensors`` for the state after ``epoch``; ``extra`` are
    optimizers besides ``optimizer``, by name (their records under ``extra_optimizers``)."""
    tensors = {f"model.{k}": v for k, v in state_tensors(model).items()}
    record = {**meta, "epoch": epoch, **optimizer_record(optimizer, "optim", tensors)}
    if extra:
        record["extra_optimizers"] = {name: optimizer_record(opt, f"optim_{name}", tensors)
                                      for name, opt in extra.items()}
    for name, g in generators.items():
        tensors[f"rng.{name}"] = g.get_state().cpu()
    return st_save(tensors, {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION,
                             "meta": json_dumps(record)})


def optimizer_record(optimizer: torch.optim.Optimizer, prefix: str,
                     tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Add ``optimizer``'s per-parameter state to ``tensors`` as ``<prefix>.<param>.<name>``;
    returns its JSON part (``param_groups``, ``optim_state``: the parameters with state)."""
    opt_state = optimizer.state_dict()
    for i, st in opt_state["state"].items():
        for k, v in st.items():
            tensors[f"{prefix}.{i}.{k}"] = v.detach().cpu().contiguous()
    return {"param_groups": opt_state["param_groups"],
            "optim_state": sorted(int(i) for i in opt_state["state"])}


def _plain(v: Any) -> Any:
    """JSON's view of a value (tuples are lists), to compare with what a checkpoint holds."""
    return json.loads(json_dumps(v))


def read_meta(metadata: dict[str, str], path: Path) -> dict[str, Any]:
    """The JSON record in a checkpoint's safetensors metadata (not yet validated)."""
    if metadata.get("format") != CHECKPOINT_FORMAT or "meta" not in metadata:
        raise RunDirError(f"{path} is not a vaekit checkpoint (no {CHECKPOINT_FORMAT} metadata; "
                          "written by an older vaekit?); start anew with --overwrite")
    if metadata.get("format_version") != CHECKPOINT_VERSION:
        raise RunDirError(f"{path} has checkpoint format {metadata.get('format_version')!r}; this "
                          f"vaekit reads format {CHECKPOINT_VERSION}")
    unknown = sorted(set(metadata) - METADATA_KEYS)
    if unknown:
        raise RunDirError(f"{path} has metadata vaekit does not write ({str(unknown[:3])[:80]}); "
                          "it is not a checkpoint of this run: start anew with --overwrite")
    meta = parse_json(metadata["meta"], f"{path} (metadata)")
    if not isinstance(meta, dict):
        raise RunDirError(f"{path}: its metadata is not a JSON object")
    unknown = sorted(set(meta) - RECORD_KEYS)
    if unknown:
        raise RunDirError(f"{path}: its record has entries vaekit does not write "
                          f"({str(unknown[:3])[:80]}); it is not a checkpoint of this run")
    return meta


def decode(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path,
           model: torch.nn.Module, optimizer: torch.optim.Optimizer,
           generators: dict[str, torch.Generator], expect: dict[str, Any],
           extra: dict[str, torch.optim.Optimizer] | None = None) -> dict[str, Any]:
    """Validate a checkpoint completely, then restore it; returns its metadata.

    ``expect`` holds what the run's configuration says: ``lr``, ``lr_schedule`` and
    ``epochs`` (the most epochs the checkpoint may have finished). ``extra`` are the
    optimizers besides ``optimizer`` the checkpoint must hold, by name (as :func:`encode`).
    """
    meta = read_meta(metadata, path)
    epoch = meta.get("epoch")
    most = expect.get("epochs")
    if not is_int(epoch) or epoch < 1 or (most is not None and epoch > most):
        bound = f"1..{most}" if most is not None else "a positive integer"
        raise RunDirError(f"{path}: epoch must be {bound} (the epochs in config.json), got "
                          f"{str(epoch)[:40]}; the checkpoint does not belong to this run")
    meta["history"] = check_history(meta.get("history"), epoch, str(path))
    if "precision" in meta and meta["precision"] not in ("fp32", "bf16"):
        raise RunDirError(f"{path}: precision must be fp32 or bf16, got {str(meta['precision'])[:40]}")

    model_t = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    check_tensors(model_t, model.state_dict(), f"{path} (model tensors)")
    extra = extra or {}
    saved = meta.get("extra_optimizers", {})
    if not isinstance(saved, dict) or set(saved) != set(extra) or not all(
            isinstance(r, dict) for r in saved.values()):
        what = sorted(saved) if isinstance(saved, dict) else type(saved).__name__
        raise RunDirError(f"{path} holds the optimizers {what} besides the model's, but this run "
                          f"trains with {sorted(extra)}; the checkpoint does not belong to this run")
    loads = [(optimizer, check_optimizer(tensors, meta, path, optimizer, expect))]
    loads += [(opt, check_optimizer(tensors, saved[name], path, opt, expect, f"optim_{name}"))
              for name, opt in extra.items()]
    rng = check_generators(tensors, path, generators)
    prefixes = ("model.", "optim.", "rng.", *(f"optim_{name}." for name in extra))
    other = sorted(k for k in tensors if not k.startswith(prefixes))
    if other:
        raise RunDirError(f"{path} has tensors vaekit does not write: {other[:3]}")

    # Everything is valid: only now touch the model, optimizers and generators.
    model.load_state_dict(model_t)
    for opt, (groups, state) in loads:
        opt.load_state_dict({"state": state, "param_groups": groups})
    for name, g in generators.items():
        g.set_state(rng[name])
    for key in ("param_groups", "optim_state", "extra_optimizers"):
        meta.pop(key, None)
    return meta


def check_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any], path: Path,
                    optimizer: torch.optim.Optimizer, expect: dict[str, Any], prefix: str = "optim"):
    """The param groups and per-parameter state to load, checked against ``optimizer``: its
    record ``meta`` (``param_groups``, ``optim_state``) and its ``<prefix>.*`` tensors."""
    current = optimizer.state_dict()["param_groups"]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    saved = meta.get("param_groups")
    if not isinstance(saved, list) or len(saved) != len(current) or not all(
            isinstance(g, dict) for g in saved):
        raise RunDirError(f"{path}: param_groups must be a list of {len(current)} objects, as the "
                          "optimizer has")
    groups = []
    for i, (s, c) in enumerate(zip(saved, current)):
        where = f"{path}: param group {i}"
        if s.get("params") != c["params"]:
            raise RunDirError(f"{where} lists parameters {str(s.get('params'))[:60]}, but the model's "
                              f"group has {len(c['params'])} parameters {str(c['params'])[:60]}")
        if set(s) != set(c):
            raise RunDirError(f"{where} has settings {sorted(s)[:12]}, expected {sorted(c)[:12]}")
        for key, value in c.items():
            if key in IMPLEMENTATION_KEYS or key in ("params", "lr"):
                continue
            if _plain(s[key]) != _plain(value):
                raise RunDirError(f"{where}: {key} is {str(s[key])[:40]}, but this run's optimizer "
                                  f"uses {value}; the checkpoint does not belong to this run")
        lr = s.get("lr")
        if not is_number(lr) or not math.isfinite(lr) or lr < 0:
            raise RunDirError(f"{where}: lr must be a finite number >= 0, got {str(lr)[:40]}")
        want = expect.get("lr")
        cosine = expect.get("lr_schedule", "constant") == "cosine"
        if want is not None and (lr > want if cosine else lr != want):
            raise RunDirError(f"{where}: lr is {lr:g}, but config.json says --lr {want:g}"
                              f"{' (cosine: at most that)' if cosine else ''}; the checkpoint does "
                              "not belong to this run")
        groups.append({**c, "lr": lr})

    listed = meta.get("optim_state")
    if (not isinstance(listed, list) or not all(is_int(i) for i in listed)
            or listed != sorted(set(listed)) or (listed and not 0 <= listed[0] <= listed[-1] < len(params))):
        raise RunDirError(f"{path}: optim_state must list parameter indices 0..{len(params) - 1}")
    keys = STATE_KEYS.get(type(optimizer))
    if keys is not None and any(g.get("amsgrad") for g in current):
        keys = keys | {"max_exp_avg_sq"}
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith(prefix + "."):
            _, i, name = k.split(".", 2) if k.count(".") >= 2 else (None, "", "")
            if not i.isdigit() or int(i) not in listed:
                raise RunDirError(f"{path}: optimizer tensor '{k}' is not one of parameters {listed[:8]}")
            state.setdefault(int(i), {})[name] = v
    if sorted(state) != listed:
        gone = sorted(set(listed) - set(state))
        raise RunDirError(f"{path} has no optimizer state for parameters {gone[:8]} ({prefix}.* tensors "
                          "are missing); the checkpoint is incomplete and cannot be resumed exactly")
    for i, st in state.items():
        p = params[i]
        if (keys is not None and set(st) != keys) or "step" not in st:
            raise RunDirError(f"{path}: optimizer state of parameter {i} has {sorted(st)}, expected "
                              f"{sorted(keys or {'step'})}")
        for name, t in st.items():
            where = f"{path}: optimizer tensor '{prefix}.{i}.{name}'"
            if name == "step":
                if t.ndim != 0 or not t.dtype.is_floating_point or not (
                        math.isfinite(float(t)) and float(t) >= 0):
                    raise RunDirError(f"{where} must be a scalar count >= 0, got {tuple(t.shape)} {t.dtype}")
                continue
            if tuple(t.shape) != tuple(p.shape) or t.dtype != p.dtype:
                raise RunDirError(f"{where} is {tuple(t.shape)} {t.dtype}, but its parameter is "
                                  f"{tuple(p.shape)} {p.dtype}")
            if not bool(torch.isfinite(t).all()) or (name.endswith("_sq") and bool((t < 0).any())):
                raise RunDirError(f"{where} has non-finite{' or negative' * name.endswith('_sq')} values")
    return groups, state


def check_generators(tensors: dict[str, torch.Tensor], path: Path,
                     generators: dict[str, torch.Generator]) -> dict[str, torch.Tensor]:
    """RNG states that ``generators`` accept (tried on scratch generators first)."""
    saved = {k[4:] for k in tensors if k.startswith("rng.")}
    if saved != set(generators):
        raise RunDirError(f"{path} has random-generator states {sorted(saved)}, expected "
                          f"{sorted(generators)}")
    out = {}
    for name, g in generators.items():
        t, want = tensors[f"rng.{name}"], g.get_state()
        if t.dtype != torch.uint8 or t.shape != want.shape:
            raise RunDirError(f"{path}: rng.{name} is {tuple(t.shape)} {t.dtype}, but this "
                              f"{g.device.type} generator's state is {tuple(want.shape)} uint8 "
                              "(resume on the device type the run was trained on)")
        try:
            torch.Generator(g.device).set_state(t)
        except RuntimeError as e:
            raise RunDirError(f"{path}: rng.{name} is not a valid generator state "
                              f"({first_line(e)})") from None
        out[name] = t
    return out
