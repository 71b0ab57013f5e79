"""The commands that show or hand on a run: report, card, compare, export, and the list of
built-in datasets."""

from __future__ import annotations

import argparse
import contextlib
import sys

from vaekit.data import DATASETS
from vaekit.data.fetch import cache_dir
from vaekit.export import describe, export_onnx
from vaekit.io.files import json_dumps
from vaekit.report.card import write_card
from vaekit.report.compare import comparison, read_runs, text_table, write_html
from vaekit.report.page import write_report
from vaekit.runs.directory import RunDir

from .common import check_out


def cmd_report(args: argparse.Namespace) -> int:
    out = check_out(args.out, (".html",)) if args.out is not None else None
    # writing into the run takes its lock; a report written elsewhere only reads the run
    with RunDir(args.run).lock() if out is None else contextlib.nullcontext():
        print(f"wrote {write_report(args.run, out, method=args.projection)}")
    return 0


def cmd_card(args: argparse.Namespace) -> int:
    print(f"wrote {write_card(args.run, license=args.license)}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    runs = read_runs(args.runs)
    if args.html:
        print(f"wrote {write_html(runs, args.html)}", file=sys.stderr)
    print(json_dumps(comparison(runs)) if args.json else text_table(comparison(runs)))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    print(describe(export_onnx(args.run, args.out, overwrite=args.overwrite, opset=args.opset)))
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    for name, ds in DATASETS.items():
        print(f"{name:<16} {ds.description}{' [cached]' if ds.cached() else ''}")
    print(f"\ncache: {cache_dir()} (set VAEKIT_DATA to move it); or give a path: .npy, .npz "
          "(x_train, x_test[, y_train, y_test]), .csv, or a folder of images")
    return 0
