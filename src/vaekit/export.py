"""ONNX export of a trained run: the encoder's mean path and the decoder's mean.

Two graphs with a dynamic batch dimension, each including the run's preprocessing:
``encoder.onnx`` maps raw data ``x`` (and labels ``y`` for a conditional model) to the posterior
mean ``z``; ``decoder.onnx`` maps codes ``z`` (and ``y``) to the decoder mean ``x`` in raw units.
No sampling is inside either graph (:data:`RANDOM_OPS` are refused), so an exported model is a
deterministic function; draw codes outside it. ``export.json`` describes the inputs, outputs,
shapes and opset, and how closely onnxruntime reproduced PyTorch when the graphs were written.

The exporter is PyTorch's ``torch.export``-based one (``dynamo=True``, the default and
recommended one since PyTorch 2.9; the TorchScript exporter is deprecated), which needs
``onnxscript``: ``pip install 'vaekit[onnx]'``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vaekit.version import __version__
from vaekit.extras import require as require_extra
from vaekit.models.kinds import require
from vaekit.errors import ConfigError, RunDirError
from vaekit.io.files import atomic_write_bytes, read_regular, write_json
from vaekit.io.stops import held_stops
from vaekit.models.vae import VAEModel
from vaekit.runs.directory import RunDir
from vaekit.models.ladder import gaussian
from vaekit.runs.store import JSON_LIMIT, parse_json

EXPORT_FORMAT = "vaekit-onnx"  # export.json's marker: a folder holds a vaekit export only if it says so
FILES = ("encoder.onnx", "decoder.onnx", "export.json")
# ONNX operators that draw random numbers (Dropout does when training_mode is set).
RANDOM_OPS = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike",
                        "Multinomial", "Bernoulli", "Dropout"})
CHECK_BATCHES = (1, 5)  # two sizes, neither the traced one: the batch dimension must be dynamic
CHECK_TOL = 1e-4  # export-time agreement, absolute and relative (the tests hold 1e-5)
MAX_GRAPH_BYTES = 2 ** 31 - 2 ** 24  # protobuf's 2 GiB limit on one file, with room for the graph


def require_onnx() -> None:
    """ConfigError naming the extra to install unless ``onnx``, ``onnxscript`` (the exporter)
    and ``onnxruntime`` (the check) can be imported, and this PyTorch has the exporter."""
    import inspect

    if not {"dynamo", "dynamic_shapes"} <= set(inspect.signature(torch.onnx.export).parameters):
        raise ConfigError(f"ONNX export needs a PyTorch with the torch.export-based ONNX exporter "
                          f"(2.6 or later); this is {torch.__version__}")
    for name in ("onnx", "onnxscript", "onnxruntime"):
        require_extra(name, "onnx", "ONNX export")


# -- the two graphs --------------------------------------------------------------------------
# They compute model.encode(x, y).mean and model.decode(z, y).mean from the model's parts:
# encode passes len(x), a Python int that fixes the batch size in a traced graph, and
# condition() branches on label values. The export checks both against encode/decode.
def one_hot(y: torch.Tensor, classes: int) -> torch.Tensor:
    """``(batch,)`` int64 labels -> ``(batch, classes)`` float one-hot; a label outside
    0..classes-1 gives a zero row (a graph cannot raise, so labels are not checked in it)."""
    return (y.reshape(-1, 1) == torch.arange(classes, device=y.device)).to(torch.float32)


class MeanEncoder(nn.Module):
    """``x [, y] -> E[z|x]``: the posterior mean of raw data (preprocessing included)."""

    def __init__(self, model: VAEModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        m = self.model
        c = one_hot(y, m.cond_dim) if m.cond_dim else None
        h = m.encoder(m.inputs(x), c)
        if not hasattr(m, "top_down"):
            return m.posterior(h).mean
        # a ladder VAE: its infer() (bottom-up) and the top-down path at posterior means
        d = F.leaky_relu(h, 0.1)
        hats = [gaussian(m.q_heads[0](d), m.min_var)]
        for up, head in zip(m.up, m.q_heads[1:]):
            d = F.leaky_relu(up(d), 0.1)
            hats.append(gaussian(head(d), m.min_var))
        mus = [None] * len(m.dims)
        for i, mu, *_ in m.top_down(hats, [None] * len(m.dims)):
            mus[i] = mu
        return torch.cat(mus, -1)


class MeanDecoder(nn.Module):
    """``z [, y] -> E[x|z]``: the decoder mean in raw units (preprocessing inverted)."""

    def __init__(self, model: VAEModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        m = self.model
        c = one_hot(y, m.cond_dim) if m.cond_dim else None
        return m.observe(m.decoder_params(z, c)).mean


def random_ops(proto: Any) -> list[str]:
    """Op types of ``proto`` (an ONNX ModelProto) that draw random numbers, searching the
    main graph, its subgraphs and the model's local functions."""
    found: list[str] = []

    def walk(nodes) -> None:
        for node in nodes:
            if node.op_type in RANDOM_OPS:
                found.append(node.op_type)
            for attr in node.attribute:
                for g in [attr.g] if attr.HasField("g") else list(attr.graphs):
                    walk(g.node)
    walk(proto.graph.node)
    for fn in proto.functions:
        walk(fn.node)
    return found


def io_spec(values) -> list[dict[str, Any]]:
    """Name, dtype and shape (a name for a dynamic dimension) of graph inputs or outputs."""
    from onnx import helper

    return [{"name": v.name,
             "dtype": str(helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)),
             "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]}
            for v in values]


@contextlib.contextmanager
def quiet_exporter():
    """The exporter's progress lines, warnings and log records are not the user's business."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        log.setLevel(level)


def to_onnx(module: nn.Module, args: tuple[torch.Tensor, ...], names: list[str], output: str,
            opset: int | None) -> Any:
    """One graph of ``module`` with a dynamic first dimension on every input."""
    batch = torch.export.Dim("batch", min=1)
    with quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(module.eval(), args, dynamo=True, input_names=names,
                                    output_names=[output], opset_version=opset,
                                    dynamic_shapes=tuple({0: batch} for _ in args),
                                    external_data=False, verbose=False)
    return program.model_proto


def export_graphs(model: VAEModel, opset: int | None = None) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The encoder and decoder graphs of ``model`` as ONNX bytes, checked, and their description.

    Parameters
    ----------
    model : VAEModel
        A trained model (a ladder VAE too), on any device; it is exported from the CPU.
    opset : int, optional
        ONNX opset (18 or later); default the exporter's recommended one.

    Returns
    -------
    files : dict
        ``{"encoder.onnx": bytes, "decoder.onnx": bytes}``.
    info : dict
        ``opset``, per graph its ``inputs``/``outputs`` (name, dtype, shape) and ``sha256``, and
        ``max_abs_error``: the largest difference between onnxruntime and ``model.encode(x,
        y).mean`` / ``model.decode(z, y).mean`` at batch sizes 1 and 5.

    Raises
    ------
    RuntimeError
        A graph holds a random op or disagrees with PyTorch beyond 1e-4 (a bug: please report).
    """
    require_onnx()
    import onnx
    import onnxruntime as ort

    model = model.to("cpu").eval()
    g = torch.Generator().manual_seed(0)
    labels = (lambda n: torch.arange(n) % model.cond_dim) if model.cond_dim else (lambda n: None)
    x_of = lambda n: torch.rand(n, *model.data_shape, generator=g)  # noqa: E731
    z_of = lambda n: torch.randn(n, model.latent_dim, generator=g)  # noqa: E731
    graphs = {"encoder": (MeanEncoder(model), "x", x_of, "z", lambda a, y: model.encode(a, y).mean),
              "decoder": (MeanDecoder(model), "z", z_of, "x", lambda a, y: model.decode(a, y).mean)}
    files, info = {}, {"opset": None, "graphs": {}, "max_abs_error": {}}
    for part, (module, name, make, output, reference) in graphs.items():
        names = [name, "y"] if model.cond_dim else [name]
        args = tuple(a for a in (make(3), labels(3)) if a is not None)  # 3: not a size torch specialises
        proto = to_onnx(module, args, names, output, opset)
        if random_ops(proto):
            raise RuntimeError(f"the {part} graph holds random ops {sorted(set(random_ops(proto)))}")
        onnx.checker.check_model(proto)
        data = proto.SerializeToString()
        if len(data) > MAX_GRAPH_BYTES:
            raise ConfigError(f"the {part} is {len(data):,} bytes, more than one ONNX file holds (2 GiB)")
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        worst = 0.0
        for n in CHECK_BATCHES:
            a, y = make(n), labels(n)
            feeds = {name: a.numpy(), **({"y": y.numpy()} if y is not None else {})}
            try:  # a graph whose batch size was fixed when traced fails here
                got = torch.from_numpy(session.run(None, feeds)[0])
            except Exception as e:
                raise RuntimeError(f"the exported {part} does not run at batch size {n}: {e}") from e
            with torch.no_grad():
                want = reference(a, y).float()
            if got.shape != want.shape or not torch.allclose(got, want, rtol=CHECK_TOL, atol=CHECK_TOL):
                raise RuntimeError(f"the exported {part} disagrees with PyTorch at batch size {n}")
            worst = max(worst, float((got - want).abs().max()))
        files[f"{part}.onnx"] = data
        info["opset"] = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
        info["graphs"][part] = {"file": f"{part}.onnx", "sha256": hashlib.sha256(data).hexdigest(),
                                "inputs": io_spec(proto.graph.input),
                                "outputs": io_spec(proto.graph.output)}
        info["max_abs_error"][part] = worst
    return files, info


# -- the export folder -----------------------------------------------------------------------
def is_ours(name: str) -> bool:
    """One of :data:`FILES`, or the temp file of an interrupted atomic write of one."""
    return name in FILES or any(name.startswith(f".{f}.") and name.endswith(".tmp") for f in FILES)


def check_out_dir(out: Path, model_sha: str, overwrite: bool) -> None:
    """Refuse to write where something would be lost.

    An export folder may be rewritten when it holds the export of the same model file (the
    result is the same); another model's export only with ``overwrite``; a folder holding
    anything else never.
    """
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder; choose another --out")
    if not out.is_dir():
        return
    names = sorted(os.listdir(out))
    foreign = [n for n in names if not is_ours(n)]
    if foreign:
        raise RunDirError(f"{out} holds files vaekit did not write (e.g. {foreign[0]}); refusing "
                          "to export into it: choose another --out")
    if not names:
        return
    try:
        meta = parse_json(read_regular(out / "export.json", JSON_LIMIT, RunDirError), str(out))
        same = isinstance(meta, dict) and meta.get("format") == EXPORT_FORMAT and \
            meta.get("model_sha256") == model_sha
    except RunDirError:
        same = False
    if not same and not overwrite:
        raise RunDirError(f"{out} holds an export of another model (or an incomplete one); "
                          "pass --overwrite to replace it, or choose another --out")


def export_onnx(run: str | Path, out: str | Path | None = None, overwrite: bool = False,
                opset: int | None = None) -> Path:
    """Write ``encoder.onnx``, ``decoder.onnx`` and ``export.json`` for the run ``run``.

    Parameters
    ----------
    run : path
        A run directory written by ``vaekit train``.
    out : path, optional
        The export folder; default ``RUN/onnx``.
    overwrite : bool
        Replace an export of a different model in ``out`` (an export of the same model file
        is rewritten without it; a folder holding other files is never written into).
    opset : int, optional
        ONNX opset, 18 or later; default the exporter's recommended one.

    Returns
    -------
    Path
        The export folder.

    Notes
    -----
    An export into the run (the default ``RUN/onnx``) holds the run's lock. The three files are
    one unit: a stop request (Ctrl-C, SIGTERM) while they are written waits until export.json,
    written last, vouches for both graphs; one before that leaves the earlier export as it was.
    """
    require_onnx()
    if opset is not None and opset < 18:
        raise ConfigError(f"--opset must be 18 or later (the torch.export-based exporter), got {opset}")
    rd = RunDir(run)
    # writing into the run takes its lock (an export elsewhere only reads the run; a missing
    # run is refused by load_model, with no lock folder made for it)
    inside = rd.path.is_dir() and (out is None or os.path.realpath(out).startswith(
        os.path.realpath(rd.path) + os.sep))
    with rd.lock() if inside else contextlib.nullcontext():
        return _export(rd, out, overwrite, opset)


def _export(rd: RunDir, out: str | Path | None, overwrite: bool, opset: int | None) -> Path:
    model, cfg = rd.load_model("cpu")  # checks config and every tensor
    require(cfg, "onnx", "vaekit export")
    out = Path(out) if out is not None else rd.folder("onnx", create=False)
    model_sha = hashlib.sha256(rd.model.read_bytes()).hexdigest()
    check_out_dir(out, model_sha, overwrite)
    files, info = export_graphs(model, opset)
    import onnx
    import onnxruntime

    meta = {"format": EXPORT_FORMAT, "format_version": 1, "vaekit_version": __version__,
            "torch_version": torch.__version__, "onnx_version": onnx.__version__,
            "run": rd.path.resolve().name, "model_sha256": model_sha,
            "model": {"class": type(model).__name__, "arch": cfg.model.arch,
                      "likelihood": cfg.model.likelihood, "prior": cfg.model.prior,
                      "latent_dim": model.latent_dim, "data_shape": list(model.data_shape),
                      "num_classes": model.cond_dim, "preprocess": model.preprocess.describe()},
            "opset": info["opset"], "batch_dimension": "batch", "graphs": info["graphs"],
            "meaning": "encoder: raw data x [, int64 labels y] -> posterior mean z; decoder: z "
                       "[, y] -> decoder mean x in raw units; no sampling inside: draw z from "
                       "the prior outside (z ~ N(0, I) for prior normal)",
            "check": {"onnxruntime_version": onnxruntime.__version__,
                      "batch_sizes": list(CHECK_BATCHES), "max_abs_error": info["max_abs_error"]}}
    schema = getattr(model.likelihood, "schema", None)
    if schema is not None:  # a table: what each number of an encoded row x is
        meta["columns"] = table_columns(schema)
        meta["meaning"] = ("encoder: an encoded table row x (one number per entry of columns, in "
                           "order: a number in the column's units, or a level's index into its "
                           "levels; NaN where a cell is missing) -> posterior mean z; decoder: z -> "
                           "x, numbers at their mean and levels as the most probable index; no "
                           "sampling inside: draw z ~ N(0, I) outside")
    with held_stops():  # one unit: a stop request waits until export.json matches the graphs
        for name, data in files.items():
            atomic_write_bytes(out / name, data)
        write_json(out / "export.json", meta)  # last: it names the graphs' checksums
    return out


def table_columns(schema) -> list[dict[str, Any]]:
    """The encoded layout of a table's rows, column by column: name, type, the data's dtype and,
    for binary, categorical and ordinal columns, the levels whose indices the graphs read and
    write."""
    from vaekit.data.schema import LEVELLED

    return [{"name": c.name, "type": c.kind, "dtype": c.dtype,
             **({"levels": [v.item() if hasattr(v, "item") else v for v in c.levels]}
                if c.kind in LEVELLED else {})} for c in schema.columns]


def describe(out: Path) -> str:
    """One line about the export in ``out`` (for the CLI)."""
    meta = parse_json(read_regular(out / "export.json", JSON_LIMIT, RunDirError), str(out))
    def names(values) -> str:
        return ", ".join(f"{v['name']}[{','.join(map(str, v['shape']))}]" for v in values)
    sig = {p: f"{names(g['inputs'])} -> {names(g['outputs'])}" for p, g in meta["graphs"].items()}
    err = max(meta["check"]["max_abs_error"].values())
    return (f"wrote {out}: encoder.onnx ({sig['encoder']}), decoder.onnx ({sig['decoder']}), "
            f"export.json; opset {meta['opset']}; onnxruntime matches PyTorch to {err:.1e}")


__all__ = ["export_onnx", "export_graphs", "random_ops", "MeanEncoder", "MeanDecoder", "RANDOM_OPS"]
