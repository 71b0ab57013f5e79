"""Schema-validated reading of the files in a run directory.

Everything read from a run directory is checked before anything uses it: JSON files against
their schema (types, bounds, exact key sets), ``.npy`` headers against the bytes that follow,
tensors against the names, shapes and dtypes the model expects. Every failure is one
:class:`~vaekit.errors.RunDirError` line naming the file and what is wrong. Nothing is ever
unpickled.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import struct
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load

from vaekit.version import __version__
from vaekit.config.settings import RunConfig
from vaekit.errors import ConfigError, RunDirError
from vaekit.io.files import read_regular

RUN_FORMAT = "vaekit-run"  # config.json's marker: a folder is a run only if its config says so
FORMAT_VERSION = 1  # bump when config.json or the tensor names change incompatibly
MAX_ELEMENTS = 2 ** 28  # one example larger than this is no data vaekit trained on
# Most bytes each kind of file may have; a larger one is refused unread (a FIFO or a huge
# file in place of a small one must not hang or exhaust memory).
JSON_LIMIT, METRICS_LIMIT, TENSOR_LIMIT = 16 * 2 ** 20, 256 * 2 ** 20, 2 ** 40


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (vaekit writes null for a non-finite number)")


def parse_json(text: str | bytes, where: str) -> Any:
    """Strict JSON (no NaN/Infinity) or a RunDirError; deep nesting is an error, not a crash."""
    try:
        return json.loads(text, parse_constant=_no_constants)
    except RecursionError:
        raise RunDirError(f"{where} is nested too deeply to be a vaekit file") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise RunDirError(f"{where} is not readable JSON ({e}); it may be truncated or damaged") from None


def read_json(path: Path, limit: int = JSON_LIMIT) -> Any:
    return parse_json(read_regular(path, limit, RunDirError), str(path))


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# -- config.json ----------------------------------------------------------------------------
TOP_KEYS = {"format", "format_version", "vaekit_version", "data_shape"}


def parse_config(d: Any, path: Path) -> tuple[RunConfig, tuple[int, ...]]:
    """The run's configuration and example shape from the parsed ``config.json``."""
    if not isinstance(d, dict):
        raise RunDirError(f"{path} holds a JSON {type(d).__name__}, not a vaekit run config")
    if d.get("format") != RUN_FORMAT:
        raise RunDirError(f"{path} has no \"format\": \"{RUN_FORMAT}\" marker, so {path.parent} is "
                          "not a vaekit run directory (a run written by an earlier vaekit lacks it: "
                          f"add \"format\": \"{RUN_FORMAT}\" to its config.json to use it)")
    version = d.get("format_version")
    if not is_int(version) or version < 1:
        raise RunDirError(f"{path}: format_version must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise RunDirError(f"{path.parent} has run format {version} (written by vaekit "
                          f"{str(d.get('vaekit_version'))[:40]}); this vaekit {__version__} reads "
                          f"format {FORMAT_VERSION}, so the run is newer than this vaekit: "
                          "upgrade vaekit to read it")
    sections = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(d) - TOP_KEYS - sections)
    if unknown:
        raise RunDirError(f"{path} has unknown keys {unknown[:5]}; it was not written by this vaekit")
    if not isinstance(d.get("vaekit_version"), str):
        raise RunDirError(f"{path}: vaekit_version must be a string")
    shape = d.get("data_shape")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= 3
            or not all(is_int(s) and 0 < s <= MAX_ELEMENTS for s in shape)
            or math.prod(shape) > MAX_ELEMENTS):
        raise RunDirError(f"{path}: data_shape must be a list of 1 to 3 positive sizes with at most "
                          f"{MAX_ELEMENTS:,} values in all, got {str(shape)[:80]}")
    for name in sections:
        if not isinstance(d.get(name, {}), dict):
            raise RunDirError(f"{path}: section '{name}' must be a JSON object")
    try:
        cfg = RunConfig.from_dict({k: d[k] for k in sections if k in d}).validate()
    except (ConfigError, TypeError, ValueError, KeyError, AttributeError, OverflowError) as e:
        raise RunDirError(f"{path} is not a valid vaekit config: {first_line(e)}") from None
    return cfg, tuple(shape)


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


# -- metrics.jsonl, the checkpoint's history, evaluation.json ------------------------------
NUMERIC_SUFFIXES = ("_loss", "_rec", "_kl")  # metrics that must be numbers where present


def check_row(row: Any, epoch: int, where: str) -> dict[str, Any]:
    """One epoch's metrics: a flat object with ``epoch`` == ``epoch``; null becomes NaN."""
    if not isinstance(row, dict):
        raise RunDirError(f"{where} is a JSON {type(row).__name__}, not an object of one epoch's "
                          "metrics")
    if row.get("epoch") != epoch or not is_int(row.get("epoch")):
        raise RunDirError(f"{where} has epoch {str(row.get('epoch'))[:40]}, expected {epoch} "
                          "(rows are epochs 1, 2, ... in order)")
    if not is_number(row.get("train_loss")) and row.get("train_loss") is not None:
        raise RunDirError(f"{where} has no numeric train_loss")
    out: dict[str, Any] = {}
    for key, value in row.items():
        numeric = key.endswith(NUMERIC_SUFFIXES) or key in ("seconds", "skipped_steps")
        if value is None:
            value = math.nan  # in memory NaN, on disk null (JSON has no NaN)
        elif not (is_number(value) or (isinstance(value, str) and len(value) <= 200 and not numeric)):
            raise RunDirError(f"{where}: '{str(key)[:40]}' must be a number or null, got "
                              f"{type(value).__name__}")
        out[key] = value
    return out


def parse_metrics(text: str, path: Path) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl``, one JSON object per epoch, epochs 1, 2, ... in order."""
    rows: list[dict[str, Any]] = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            row = parse_json(line, f"{path} line {n}")  # names the file and line
            rows.append(check_row(row, len(rows) + 1, f"{path} line {n}"))
    return rows


def kept_row(history: list[dict]) -> dict:
    """The metrics of the epoch whose weights the run holds: the early-stopping pick, else the last."""
    last = history[-1]
    best = last.get("best_epoch")
    return next((r for r in history if r["epoch"] == best), last) if best else last


def check_history(history: Any, epoch: int, where: str) -> list[dict[str, Any]]:
    if not isinstance(history, list) or len(history) != epoch:
        got = f"{len(history)} rows" if isinstance(history, list) else type(history).__name__
        raise RunDirError(f"{where}: history must be a list of {epoch} epochs' metrics, got {got}")
    return [check_row(r, i + 1, f"{where} history row {i + 1}") for i, r in enumerate(history)]


EVALUATION_INTS = ("importance_samples", "n_examples", "active_units")  # counts: ints >= 0
EVALUATION_STRS = ("data", "split", "kl_estimator")


def check_evaluation(d: Any, path: Path) -> dict[str, Any]:
    """``evaluation.json``: a flat object of numbers, strings, null and lists of numbers, with
    counts as non-negative ints and names as strings; null numbers become NaN."""
    redo = "run 'vaekit evaluate' again to rewrite it, or delete it"
    ll = d.get("log_likelihood", "missing") if isinstance(d, dict) else "missing"
    if not (is_number(ll) or ll is None):
        raise RunDirError(f"{path} is not a vaekit evaluation (an object with log_likelihood); {redo}")
    out: dict[str, Any] = {}
    for key, value in d.items():
        if key in EVALUATION_INTS and not (is_int(value) and value >= 0):
            raise RunDirError(f"{path}: '{key}' must be a count (an integer >= 0); {redo}")
        if key in EVALUATION_STRS and not isinstance(value, str):
            raise RunDirError(f"{path}: '{key}' must be a string; {redo}")
        if isinstance(value, list):
            if not all(is_number(v) or v is None for v in value):
                raise RunDirError(f"{path}: '{key[:40]}' must be a list of numbers; {redo}")
            value = [math.nan if v is None else v for v in value]
        elif value is None:
            value = math.nan if key not in ("kl_per_dim", "bits_per_dim") else None
        elif not (is_number(value) or isinstance(value, str)):
            raise RunDirError(f"{path}: '{key[:40]}' must be a number, string or null, got "
                              f"{type(value).__name__}; {redo}")
        out[key] = value
    return out


def check_schema(d: Any, schema: dict[str, type], where: str, redo: str,
                 error: type[Exception] = RunDirError) -> dict[str, Any]:
    """``d`` must be an object with exactly ``schema``'s keys, each of its type: ``float`` a
    finite number, ``list`` a list of finite numbers, ``int`` an int (never a bool). ``redo``
    says how to rewrite the file; failures raise ``error``."""
    if not isinstance(d, dict) or set(d) != set(schema):
        got = sorted(map(str, d))[:8] if isinstance(d, dict) else type(d).__name__
        raise error(f"{where} does not have the keys vaekit writes there (got {got}); {redo}")
    finite = (lambda v: is_number(v) and math.isfinite(v))  # noqa: E731
    for key, kind in schema.items():
        v = d[key]
        ok = (finite(v) if kind is float else
              isinstance(v, list) and all(map(finite, v)) if kind is list else
              isinstance(v, kind) and not isinstance(v, bool))
        if not ok:
            raise error(f"{where}: '{key}' must be {'a number' if kind is float else kind.__name__}"
                        f"; {redo}")
    return d


# -- .npy and .safetensors ------------------------------------------------------------------
def parse_npy(data: bytes, where: str) -> np.ndarray:
    """A numeric array from ``.npy`` bytes; the header must match the bytes that follow (a
    crafted header cannot make numpy allocate more than the file holds)."""
    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}[version]
        shape, fortran, dtype = read_header(f)
    except (ValueError, KeyError, EOFError, SyntaxError, TypeError) as e:
        raise RunDirError(f"{where} is not a readable .npy file ({first_line(e)}); it may be "
                          "truncated or damaged") from None
    if dtype.hasobject or dtype.kind not in "biuf" or dtype.fields is not None:
        raise RunDirError(f"{where} holds dtype {dtype}, not numbers vaekit wrote")
    count = math.prod(shape)
    if count * dtype.itemsize != len(data) - f.tell():
        raise RunDirError(f"{where} is truncated or damaged: its header promises {shape} "
                          f"{dtype} ({count * dtype.itemsize:,} bytes) but {len(data) - f.tell():,} "
                          "bytes follow")
    a = np.frombuffer(data, dtype, count, f.tell())
    return a.reshape(shape, order="F" if fortran else "C")


def read_npy(path: Path) -> np.ndarray:
    return parse_npy(read_regular(path, TENSOR_LIMIT, RunDirError), str(path))


def parse_safetensors(data: bytes, where: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and string metadata of safetensors bytes; anything else (a pickle, a truncated
    file, a header that lies) is refused."""
    try:
        (n,) = struct.unpack("<Q", data[:8])
        if not 0 < n <= min(len(data) - 8, 100 * 2 ** 20):
            raise ValueError(f"header length {n} does not fit a {len(data)}-byte file")
        header = json.loads(data[8:8 + n])
        meta = (header.get("__metadata__") or {}) if isinstance(header, dict) else None
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise ValueError("malformed __metadata__")
        tensors = st_load(data)
    except (SafetensorError, struct.error, ValueError, RecursionError, RuntimeError) as e:
        raise RunDirError(f"{where} is not a readable safetensors file ({first_line(e)}); it may be "
                          "truncated or not a vaekit file") from None
    return tensors, meta


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    return parse_safetensors(read_regular(path, TENSOR_LIMIT, RunDirError), str(path))


def check_tensors(tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                  where: str, finite: bool = True) -> None:
    """``tensors`` must have exactly ``expected``'s names, shapes and dtypes, and finite floats."""
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise RunDirError(f"{where} does not match config.json: missing tensors {missing[:3]}, "
                          f"unexpected {extra[:3]}")
    for k, v in expected.items():
        t = tensors[k]
        if tuple(t.shape) != tuple(v.shape) or t.dtype != v.dtype:
            raise RunDirError(f"{where} does not match config.json: tensor '{k}' has shape "
                              f"{tuple(t.shape)} {t.dtype}, expected {tuple(v.shape)} {v.dtype}")
        if finite and t.dtype.is_floating_point and not bool(torch.isfinite(t).all()):
            raise RunDirError(f"{where}: tensor '{k}' has NaN or infinite values (the training "
                              "that wrote it diverged); retrain, or resume from a good checkpoint")


# -- the other files of a run -----------------------------------------------------------------
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    data = read_regular(path, METRICS_LIMIT, RunDirError)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise RunDirError(f"{path} is not UTF-8 text; it is damaged (delete it: --resume "
                          "rebuilds it from the checkpoint)") from None
    return parse_metrics(text, path)


def numbered(folder: Path, stem: str, suffix: str) -> list[int]:
    """The N of every ``<stem>_<N><suffix>`` in ``folder``, sorted; other names are ignored."""
    if not folder.is_dir():
        return []
    pattern = re.compile(re.escape(stem) + r"_([0-9]{1,9})" + re.escape(suffix))
    return sorted(int(m[1]) for n in os.listdir(folder) if (m := pattern.fullmatch(n)))


def read_latent(folder: Path) -> tuple[list[tuple[int, np.ndarray]], np.ndarray | None]:
    """The latent maps ``latent/epoch_<N>.npy`` (finite ``(n, latent)`` floats of one shape)
    and ``latent/labels.npy`` (one integer label per point), or a RunDirError."""
    snaps = [(e, read_npy(folder / f"epoch_{e}.npy")) for e in numbered(folder, "epoch", ".npy")]
    for e, a in snaps:
        if a.ndim != 2 or a.dtype.kind != "f" or a.shape != snaps[0][1].shape or not np.isfinite(a).all():
            raise RunDirError(f"{folder / f'epoch_{e}.npy'} is not a finite (n, latent) float array "
                              f"like the other latent maps (it is {a.shape} {a.dtype}); delete it")
    labels_file = folder / "labels.npy"
    labels = read_npy(labels_file) if labels_file.exists() else None
    if labels is not None and (labels.ndim != 1 or labels.dtype.kind not in "iub"
                               or (snaps and len(labels) != len(snaps[0][1]))):
        raise RunDirError(f"{labels_file} does not hold one integer label per latent point; delete it")
    return snaps, labels


def read_png(path: Path) -> bytes:
    data = read_regular(path, TENSOR_LIMIT, RunDirError)
    if not data.startswith(PNG_MAGIC):
        raise RunDirError(f"{path} is not a PNG image; delete it (each epoch rewrites it)")
    return data
