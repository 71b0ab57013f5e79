"""What a run directory holds, declared once: every kind of entry vaekit writes there, with its
writer and the schema it is read through. :data:`OWNED` (the one definition of "ours": what
``--overwrite`` may remove and what recognition accepts) and :data:`OWNED_DIRS` are derived
from :data:`ENTRIES`; the modules that write an entry take its name from here."""

from __future__ import annotations

import re
from typing import NamedTuple


class Entry(NamedTuple):
    pattern: str  # regular expression of the path inside the run, "/"-separated
    holds: str
    writer: str   # the module that writes it
    reader: str   # what reads (and validates) it


MODEL_FORMAT = "vaekit-model"  # the one metadata entry of model.safetensors
CONFIG = "config.json"
MODEL = "model.safetensors"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.safetensors"
EVALUATION = "evaluation.json"
REPORT = "report.html"
MLFLOW_LINK = "mlflow.json"
SAMPLE_QUALITY = "sample_quality.json"
SAMPLERS = "samplers"
LOCK_NAME = ".vaekit.lock"
STAGING_NAME = ".vaekit-replaced"  # the old run, during an --overwrite, until the new run's first checkpoint
CARD = "README.md"  # vaekit's model card only when it carries CARD_MARKER
CARD_MARKER = "<!-- vaekit model card: written by vaekit; 'vaekit train' and 'vaekit evaluate' rewrite it -->"

ENTRIES = (
    Entry(r"config\.json", "everything that defines the run", "runs.directory", "runs.store.parse_config"),
    Entry(r"model\.safetensors", "the kept weights", "runs.directory", "runs.reading.load_model"),
    Entry(r"metrics\.jsonl", "one JSON object per epoch", "runs.directory", "runs.store.parse_metrics"),
    Entry(r"checkpoint\.safetensors", "the last finished epoch, one atomic unit", "runs.checkpoint",
          "runs.checkpoint.decode"),
    Entry(r"checkpoint\.json", "the metadata half of an older vaekit's checkpoint", "(vaekit < 0.1)",
          "(never read)"),
    Entry(r"evaluation[^/]*\.json", "vaekit evaluate's numbers", "pipeline.using",
          "runs.store.check_evaluation"),
    Entry(r"report\.html", "the self-contained report", "report.page", "(a person)"),
    Entry(r"\.vaekit\.lock", "the lock of a process writing the run", "io.files.exclusive_lock",
          "io.files.exclusive_lock"),
    Entry(r"images/(reconstruction|samples)_[0-9]+\.png", "each epoch's image grids",
          "training.callbacks", "runs.store.read_png"),
    Entry(r"latent/(epoch_[0-9]+|labels)\.npy", "the 2-D latent maps' codes", "training.callbacks",
          "runs.store.read_latent"),
    Entry(r"tensorboard/events\.out\.tfevents\.[^/]+", "TensorBoard's event files",
          "training.callbacks", "(TensorBoard)"),
    Entry(r"onnx/(encoder|decoder)\.onnx|onnx/export\.json", "the ONNX export", "export",
          "export.describe"),
    Entry(r"mlflow\.json", "the MLflow run this run is logged to", "training.tracking",
          "training.tracking"),
    Entry(r"samplers/[a-z][a-z0-9-]*\.(safetensors|json)", "fitted samplers of codes",
          "sampling.samplers", "sampling.samplers.load"),
    Entry(r"sample_quality\.json", "the sample-quality metric", "evaluation.quality",
          "evaluation.quality.check"),
)

OWNED = re.compile("|".join(f"(?:{e.pattern})" for e in ENTRIES))
OWNED_DIRS = {m[1] for e in ENTRIES if (m := re.match(r"([a-z]+)/", e.pattern))}  # folders of their own
# io.files' temp files: ".NAME.<writer's mark>-<random>.tmp"
TEMP = re.compile(r"(?P<dir>(?:[^/]+/)?)\.(?P<name>[^/]+)\.(?P<mark>[0-9a-f]{8})-[A-Za-z0-9_]+\.tmp")
STAGING_MARKER = ".vaekit-staging"  # inside the staging folder: proof that vaekit made it


def is_owned(rel: str, writers: set[str] | frozenset[str] = frozenset()) -> bool:
    """Whether vaekit wrote the file at ``rel`` (a ``/``-separated path inside a run): a name
    of :data:`OWNED`, or the temp file of one whose writer's mark is in ``writers`` (the marks
    the run's lock file recorded, :func:`vaekit.io.files.lock_writers`)."""
    if OWNED.fullmatch(rel):
        return True
    m = TEMP.fullmatch(rel)
    return bool(m) and m["mark"] in writers and bool(OWNED.fullmatch(m["dir"] + m["name"]))
