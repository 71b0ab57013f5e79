"""What the commands over a trained run share: the output path's check, and the run's model
with the checked rows of DATA."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from vaekit.errors import ConfigError
from vaekit.pipeline import data_rows, load_run


def check_out(path: str, suffixes: Sequence[str]) -> Path:
    if not path or not path.strip():
        raise ConfigError(f"--out needs a file name ending in {' or '.join(suffixes)}")
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise ConfigError(f"--out must end in {' or '.join(suffixes)}, got '{path}'")
    if out.is_dir():
        raise ConfigError(f"--out {path} is a directory; give a file name")
    return out


def run_data(args: argparse.Namespace, images: str | None = None):
    """The model of RUN, its configuration, and the checked rows of DATA (or its test split)
    with their labels and known factors (:class:`vaekit.pipeline.Rows`, tensors on the model's
    device)."""

    model, cfg = load_run(args.run, args.device)
    if images and len(model.data_shape) != 3:
        raise ConfigError(f"this model's data are not images, so {images} cannot be drawn")
    r = data_rows(model, cfg, args.data, args.split)
    to = (lambda t: None if t is None else t.to(model.device))
    return model, cfg, type(r)(r.x.to(model.device), to(r.y), to(r.labels), r.factors, r.factor_names)


def run_rows(args: argparse.Namespace, images: str | None = None):
    """The model of RUN, its configuration, and the checked rows of DATA (or its test split)."""
    model, cfg, r = run_data(args, images)
    return model, cfg, r.x, r.y


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
