"""The ``vaekit`` command's parser: one subcommand per command, the train flags generated from
the configuration's fields (:mod:`vaekit.config.settings`), so each option's type, choices,
bounds and help are written once."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from vaekit.config.options import OptionError, choices_of, parse_sizes
from vaekit.config.settings import SAMPLER_HELP, SAMPLER_NAMES, iter_options
from vaekit.version import __version__


SPLITS = ("all", "train", "test")


class Parser(argparse.ArgumentParser):
    """argparse with the house error format: one ``error:`` line, exit status 2."""

    def error(self, message: str):  # noqa: D102 (argparse API)
        sys.stderr.write(f"error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


def number(kind: type, low: float | None = None, high: float | None = None, low_open: bool = False):
    """An argparse type: an int or finite float within the bounds."""
    def parse(s: str):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                             f"got '{s}'") from None
        if kind is float and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"expected a finite number, got '{s}'")
        if low is not None and (v <= low if low_open else v < low):
            what = ("a positive integer" if kind is int and low == 1 else
                    f"a value {'>' if low_open else '>='} {low:g}")
            raise argparse.ArgumentTypeError(f"expected {what}, got {s}")
        if high is not None and v > high:
            raise argparse.ArgumentTypeError(f"expected a value <= {high:g}, got {s}")
        return v
    return parse


positive_int = number(int, 1)


def sizes(name: str):
    def parse(s: str) -> tuple[int, ...]:
        try:
            return parse_sizes(s, name)
        except OptionError as e:
            raise argparse.ArgumentTypeError(str(e).replace(f"{name} must be", "expected")) from None
    return parse


class JoinValues(argparse.Action):
    """A repeatable text flag whose values are joined by commas into one string."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: D102 (argparse API)
        old = getattr(namespace, self.dest)
        setattr(namespace, self.dest, values if not old else f"{old},{values}")


def add_option_flags(p: argparse.ArgumentParser) -> list[str]:
    """One flag per configuration field; defaults stay None so that a config file's value is
    only overridden by a flag the user actually gave. Returns the field names."""
    names = []
    for name, f, kind in iter_options("cli"):
        m = f.metadata
        shown = "none" if f.default in (None, (), "") else str(f.default).lower() if kind is bool else f.default
        auto = "; when not given, chosen from the data where it matters, and said" if m["auto"] else ""
        kw: dict[str, Any] = dict(dest=name, default=None, metavar=m["metavar"],
                                  help=f"{m['help']} (default {shown}{auto})")
        if kind is bool:
            kw = dict(dest=name, default=None, action="store_const", const=True,
                      help=m["help"] + (f" ({auto[2:]})" if auto else ""))
        elif kind is tuple:
            kw["type"] = sizes(name)
        elif kind in (int, float):
            kw["type"] = number(kind, m["low"], m["high"], m["low_open"])
        elif choices_of(f) is not None and not callable(m["choices"]):
            kw["choices"] = choices_of(f)
        if m["repeat"]:  # --column a=count --column b=drop -> "a=count,b=drop"
            kw["action"] = JoinValues
        if m["const"] is not None:  # --flag alone takes the const value
            kw |= dict(nargs="?", const=m["const"])
        p.add_argument("--" + name.replace("_", "-"), **kw)
        names.append(name)
    return names


def sampler_list(s: str) -> tuple[str, ...]:
    if s.strip() == "all":
        return ("all",)  # the samplers that apply to the run's kind (pipeline.samplers_for)
    names = tuple(v.strip() for v in s.split(",") if v.strip())
    bad = [n for n in names if n not in SAMPLER_NAMES]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"expected samplers from {', '.join(SAMPLER_NAMES)} "
                                         f"(comma-separated) or all, got '{s}'")
    return tuple(dict.fromkeys(names))


def dim_list(s: str) -> list[int]:
    try:
        dims = [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected dimensions like 0,1,5, got '{s}'") from None
    if not dims:
        raise argparse.ArgumentTypeError(f"expected at least one dimension, like 0,1,5, got '{s}'")
    return dims


def build_parser() -> Parser:
    common = Parser(add_help=False)
    # SUPPRESS: a subcommand's --debug default must not undo `vaekit --debug COMMAND`.
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback on errors")
    p = Parser(prog="vaekit",
               description="Variational autoencoders on PyTorch: train, evaluate, score, sample, "
                           "reconstruct, embed.")
    p.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    p.add_argument("--version", action="version", version=f"vaekit {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    data_help = ("built-in dataset name (see 'vaekit datasets') or a .npy/.npz/.csv/.parquet file or "
                 "image folder")
    seed = number(int, 0, 2**63 - 1)

    t = sub.add_parser("train", parents=[common], help="train a VAE and write a run directory",
                       description="Train a VAE on DATA. The defaults are the reference MNIST "
                                   "model (mlp 784-400-20, bernoulli, Adam 1e-3, batch 128, 10 "
                                   "epochs); options you do not give may be chosen from the data "
                                   "(a .csv with a header or a .parquet file is a table: each "
                                   "column's type is inferred and printed, and gets its own "
                                   "family; small data get more epochs with early stopping), each choice printed "
                                   "with the flag that overrides it.")
    t.add_argument("data", metavar="DATA", help=data_help)
    t.add_argument("--out", help="run directory (default runs/<data>-<time>)")
    t.add_argument("--config", metavar="FILE.toml", help="TOML file whose keys are these flag names; "
                                                         "flags given here override it")
    t.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    t.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    t.add_argument("--no-report", action="store_true", help="do not write report.html at the end")
    t.set_defaults(option_names=add_option_flags(t))

    def run_command(name: str, help: str, data: str | None) -> argparse.ArgumentParser:
        s = sub.add_parser(name, parents=[common], help=help, description=help)
        s.add_argument("run", metavar="RUN", help="run directory written by 'vaekit train'")
        if data == "optional":
            s.add_argument("data", metavar="DATA", nargs="?", help=data_help + " (default: the run's test split)")
        elif data == "required":
            s.add_argument("data", metavar="DATA", help=data_help)
        s.add_argument("--device", default="auto",
                       help="auto (cuda when present), cpu, cuda, cuda:N or mps (default auto)")
        return s

    s = run_command("sample", "decode draws from the prior or a fitted sampler", None)
    s.add_argument("-n", type=number(int, 1, 10**7), default=64, help="number of samples (default 64)")
    s.add_argument("--out", required=True, help="FILE.png (a grid), FILE.npy (decoder means), or for "
                   "a model of a table FILE.csv or FILE.parquet (the table's columns and types)")
    s.add_argument("--mean", action="store_true", help="a table's samples: the decoder means (the "
                   "mean, or the most probable level, of each column) instead of draws from p(x|z)")
    s.add_argument("--seed", type=seed, default=0, help="seed for the draws (default 0)")
    s.add_argument("--label", type=int, metavar="L",
                   help="class to draw, for a conditional model (trained with --conditional)")
    s.add_argument("--sampler", choices=SAMPLER_NAMES, default="prior", help=SAMPLER_HELP)
    s = run_command("fit-sampler", "fit a sampler of latent codes (ex-post mixture or two-stage "
                    "VAE) to the run's training data and store it in RUN/samplers", None)
    s.add_argument("--sampler", choices=SAMPLER_NAMES[1:], required=True,
                   help="expost: a Gaussian mixture on the training codes, its components chosen "
                        "on held-out codes (Ghosh et al. 2020); two-stage: a second VAE on the "
                        "codes (Dai & Wipf 2019). Replaces a stored fit; 'sample' and 'evaluate' "
                        "fit a missing one themselves")
    s = run_command("impute", "fill a table's missing cells from the model (MIWAE's importance-"
                    "weighted conditional means, or the most probable level)", "required")
    s.add_argument("-k", "--importance-samples", type=number(int, 1, 10**6), default=1000, metavar="K",
                   help="importance samples per row (default 1000)")
    s.add_argument("--draws", type=number(int, 1, 1000), metavar="M",
                   help="instead: M multiple imputations drawn from p(missing | observed) "
                        "(sampling importance resampling), stacked in one file with a first "
                        "column 'imputation' (1..M)")
    s.add_argument("--seed", type=seed, default=0, help="seed of the importance samples (default 0)")
    s.add_argument("--out", required=True, help="FILE.csv or FILE.parquet: DATA with its missing "
                   "cells filled (observed cells and left-out columns as they were)")
    s = run_command("reconstruct", "draw inputs above their reconstructions", "optional")
    s.add_argument("-n", type=positive_int, default=8, help="number of inputs (default 8)")
    s.add_argument("--split", choices=SPLITS, default="test", help="part of DATA to use (default test)")
    s.add_argument("--out", required=True, help="FILE.png, or for a model of a table FILE.csv or "
                   "FILE.parquet (the decoder means at the posterior means, in the table's columns)")
    s = run_command("embed", "posterior means, one row per input, in input order", "required")
    s.add_argument("--split", choices=SPLITS, default="all",
                   help="part of DATA when it has train/test parts: all (train then test), train or test "
                        "(default all)")
    s.add_argument("--out", required=True, help="FILE.npy or FILE.csv")
    s = run_command("evaluate", "ELBO, importance-sampled log p(x) with its standard error, "
                    "active units and KL per dimension; with --samples, sample quality", "optional")
    s.add_argument("--split", choices=SPLITS, default="test", help="part of DATA (default test)")
    s.add_argument("--importance-samples", "-k", type=number(int, 1, 10**6), default=1000, metavar="K",
                   help="importance samples per example (default 1000)")
    s.add_argument("--seed", type=seed, default=0, help="seed for the importance samples and, with "
                   "--samples, of the draws (draw r uses seed + r; default 0)")
    s.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    s.add_argument("--samples", type=number(int, 4, 10**6), metavar="N",
                   help="also measure sample quality with N generated examples per draw: "
                        "classifier FD (the Fréchet distance in the features of a classifier vaekit "
                        "trains on the data's labels, cached; not Inception FID) and k-NN "
                        "precision/recall against the evaluated rows; kept in "
                        "RUN/sample_quality.json (needs labelled data)")
    s.add_argument("--sampler", type=sampler_list, default=("prior",), metavar="NAMES",
                   help="with --samples: the samplers to measure, comma-separated, or all "
                        f"({', '.join(SAMPLER_NAMES)}; default prior); a missing fit is made first")
    s.add_argument("--draws", type=number(int, 1, 1000), default=5, metavar="R",
                   help="with --samples: independent draws behind the mean ± sd (default 5)")
    s = run_command("score", "log p(x) per row, for outlier detection (score = -log_likelihood)", "required")
    s.add_argument("--split", choices=SPLITS, default="all", help="part of DATA (default all)")
    s.add_argument("--importance-samples", "-k", type=number(int, 1, 10**6), default=1000, metavar="K",
                   help="importance samples per row (default 1000)")
    s.add_argument("--seed", type=seed, default=0, help="seed for the samples (default 0)")
    s.add_argument("--out", required=True, help="FILE.csv with columns index,log_likelihood")
    b = sub.add_parser("baseline", parents=[common], help="test log p(x) of a classic model "
                       "(scikit-learn): gmm (EM) or ppca",
                       description="Fit a classic latent-variable model on DATA's training split and "
                                   "print its test log-likelihood in the units of 'vaekit evaluate'.")
    b.add_argument("data", metavar="DATA", help=data_help)
    b.add_argument("--model", required=True, help="gmm (Gaussian mixture fitted by EM), ppca, or "
                   "independent (a table's per-column marginals)")
    b.add_argument("--components", type=positive_int, help="mixture components or pPCA latent "
                   "dimensions (default 10 for gmm, at most one per d + 1 training rows; 20 for ppca, "
                   "at most d - 1 for d features)")
    b.add_argument("--test-fraction", type=number(float, 0, 0.99), default=0.1,
                   help="held-out fraction when DATA has no test split (default 0.1)")
    b.add_argument("--seed", type=seed, default=0, help="random_state of the fit (default 0)")
    r = sub.add_parser("report", parents=[common], help="write a self-contained HTML report of a run",
                       description="Write report.html: configuration, metrics, evaluation (after "
                                   "'vaekit evaluate'), loss curves, latent maps, diagnostics, "
                                   "reconstructions and samples; images embedded, no network.")
    r.add_argument("run", metavar="RUN", help="run directory written by 'vaekit train'")
    r.add_argument("--out", help="FILE.html (default RUN/report.html)")
    r.add_argument("--projection", choices=("pca", "tsne"), default="pca",
                   help="2-D projection of latent maps when the latent has more dimensions (default pca)")
    s = run_command("interpolate", "decode the path between two inputs' posterior means: two rows, "
                    "or typical examples of two classes (--from-label 3 --to-label 8)", "optional")
    s.add_argument("--from", dest="i", type=int, metavar="I", help="row of the first input")
    s.add_argument("--to", dest="j", type=int, metavar="J", help="row of the second input")
    s.add_argument("--from-label", type=int, metavar="L",
                   help="instead of --from: the typical example of class L, the one whose posterior "
                        "mean is nearest the mean code of its class in the rows used")
    s.add_argument("--to-label", type=int, metavar="L", help="instead of --to: the typical example "
                   "of class L, chosen the same way")
    s.add_argument("--steps", type=number(int, 1, 1000), default=10, help="decoded points (default 10)")
    s.add_argument("--spherical", action="store_true", help="spherical instead of linear interpolation")
    s.add_argument("--split", choices=SPLITS, default="test", help="part of DATA (default test)")
    s.add_argument("--out", required=True, help="FILE.png: first input, the path, second input")
    s = run_command("traverse", "vary one latent dimension at a time around an input's code", "optional")
    s.add_argument("--index", type=int, default=0, help="row of the input (default 0)")
    s.add_argument("--dims", type=dim_list, help="dimensions, e.g. 0,1,5 (default the first 10)")
    s.add_argument("--range", type=number(float, 0, 1e6), default=3.0, help="offsets span +-R (default 3)")
    s.add_argument("--steps", type=number(int, 1, 1000), default=9, help="values per dimension (default 9)")
    s.add_argument("--split", choices=SPLITS, default="test", help="part of DATA (default test)")
    s.add_argument("--out", required=True, help="FILE.png, one row per dimension")
    sub.add_parser("datasets", parents=[common], help="list the built-in datasets")
    e = sub.add_parser("export", parents=[common], help="the encoder and decoder as ONNX graphs",
                       description="Write encoder.onnx (x [, y] -> posterior mean z) and decoder.onnx "
                                   "(z [, y] -> decoder mean x), with a dynamic batch size, the run's "
                                   "preprocessing inside and no sampling, plus export.json; each graph "
                                   "is checked against PyTorch with onnxruntime. Needs "
                                   "pip install 'vaekit[onnx]'.")
    e.add_argument("run", metavar="RUN", help="run directory written by 'vaekit train'")
    e.add_argument("--format", choices=("onnx",), default="onnx", help="export format (default onnx)")
    e.add_argument("--out", metavar="DIR", help="export folder (default RUN/onnx)")
    e.add_argument("--overwrite", action="store_true",
                   help="replace an export of another model in DIR (the same model's is rewritten "
                        "without it; a folder with other files is never written into)")
    e.add_argument("--opset", type=number(int, 18, 100), metavar="N",
                   help="ONNX opset, 18 or later (default: the exporter's recommended one)")
    m = sub.add_parser("card", parents=[common], help="write the run's model card, RUN/README.md",
                       description="Write RUN/README.md: a YAML header for model hubs, the data, the "
                                   "configuration, final metrics, the evaluation with its error bars, "
                                   "versions, and intended use and limits. 'vaekit train' and "
                                   "'vaekit evaluate' rewrite it; a README.md vaekit did not write is "
                                   "never replaced.")
    m.add_argument("run", metavar="RUN", help="run directory written by 'vaekit train'")
    m.add_argument("--license", help="license for the header (default unknown)")
    c = sub.add_parser("compare", parents=[common], help="compare runs: differing options, losses, "
                       "evaluations", description="A table of runs: the configuration options that "
                       "differ between them, final and best test loss (with its epoch), epochs, and "
                       "log p(x) +- its standard error where evaluated.")
    c.add_argument("runs", metavar="RUN", nargs="+", help="run directories written by 'vaekit train'")
    c.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    c.add_argument("--html", metavar="FILE.html", help="also write a self-contained page with the "
                   "loss curves overlaid and the same table")
    return p
