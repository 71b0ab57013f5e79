"""The commands that use a trained model: sample, fit-sampler, reconstruct, embed, interpolate
and traverse."""

from __future__ import annotations

import argparse
import math

import torch

from vaekit.errors import ConfigError
from vaekit.evaluation.measures import posterior_means
from vaekit.io.files import atomic_write_text
from vaekit.io.images import save_grid
from vaekit.data.table_files import write_table
from vaekit.pipeline import (check_label, impute_table, load_run, run_sampler, sample, table_frame,
                             table_schema)
from vaekit.runs.directory import write_npy
from vaekit.sampling.morph import interpolation_ends, morph
from vaekit.sampling.paths import traversal_codes
from .common import check_out, run_data, run_rows, say


TABLE_FILES = (".csv", ".parquet")


def cmd_sample(args: argparse.Namespace) -> int:
    out = check_out(args.out, (".png", ".npy", *TABLE_FILES))
    model, cfg = load_run(args.run, args.device)
    table = out.suffix.lower() in TABLE_FILES
    if out.suffix.lower() == ".png" and len(model.data_shape) != 3:
        raise ConfigError("this model's data are not images; write samples to a .npy file"
                          + (" or a .csv/.parquet table" if table_schema(model) else ""))
    if table and table_schema(model) is None:
        raise ConfigError("this model's data are not a table (a .csv with a header or a .parquet "
                          "file); write samples to a .npy or .png file")
    check_label(model, args.label)  # before a sampler is fitted
    fitted = None if args.sampler == "prior" else run_sampler(args.run, model, cfg, args.sampler, log=say)
    # a table's samples are draws from p(x|z) (its columns' own noise); --mean: decoder means
    draw = table and not args.mean
    x = sample(model, args.n, args.seed, args.label, fitted, draw=draw)
    if out.suffix.lower() == ".png":
        save_grid(x, out, nrow=math.ceil(math.sqrt(args.n)))
    elif table:
        write_table(table_frame(model, x), out)
    else:
        write_npy(out, x.numpy())
    what = "draws from p(x|z)" if draw else "decoder means"
    if fitted is not None and fitted.draws_only:
        what += ", continuous columns mapped onto the training data's marginals"
    print(f"wrote {args.n} samples ({args.sampler} sampler, {what}) to {out}")
    return 0


def cmd_fit_sampler(args: argparse.Namespace) -> int:
    model, cfg = load_run(args.run, args.device)
    s = run_sampler(args.run, model, cfg, args.sampler, fit="always", log=say)
    print(f"fitted the {args.sampler} sampler of {args.run} ({s.describe()}) in "
          f"{s.record['seconds']:.1f} s")
    return 0


def cmd_reconstruct(args: argparse.Namespace) -> int:
    out = check_out(args.out, (".png", *TABLE_FILES))
    if out.suffix.lower() in TABLE_FILES:  # a table: the decoder means at the posterior means
        model, _, x, y = run_rows(args)
        x, y = x[: args.n], None if y is None else y[: args.n]
        write_table(table_frame(model, model.reconstruct(x, y).float().cpu()), out)
        print(f"wrote the reconstructions of {len(x)} rows to {out}")
        return 0
    model, _, x, y = run_rows(args, "reconstructions")
    x, y = x[: args.n], None if y is None else y[: args.n]
    save_grid(torch.cat([x, model.reconstruct(x, y)]), out, nrow=len(x))
    print(f"wrote {len(x)} inputs above their reconstructions to {out}")
    return 0


def cmd_impute(args: argparse.Namespace) -> int:
    out = check_out(args.out, TABLE_FILES)
    model, _ = load_run(args.run, args.device)
    res = impute_table(model, args.data, k=args.importance_samples, draws=args.draws or 0,
                       seed=args.seed)
    if args.draws:  # one file: the M completed tables one after the other, numbered
        import pandas as pd

        table = pd.concat([d.assign(imputation=m + 1)[["imputation", *d.columns]]
                           for m, d in enumerate(res.draws)], ignore_index=True)
    else:
        table = res.table
    write_table(table, out)
    what = f"{args.draws} multiple imputations" if args.draws else "conditional means and modes"
    low = int((res.ess < 10).sum())
    print(f"filled {res.filled} missing cells of {len(res.table)} rows ({what}, K = "
          f"{args.importance_samples}) into {out}")
    if low:
        say(f"note: {low} rows have an effective sample size below 10 of their {args.importance_samples} "
            "importance weights; a larger -k makes their imputations steadier")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    out = check_out(args.out, (".npy", ".csv"))
    model, _, x, y = run_rows(args)
    z = posterior_means(model, x, y=y).numpy()
    if out.suffix.lower() == ".npy":
        write_npy(out, z)
    else:
        header = ",".join(f"z{i}" for i in range(z.shape[1]))
        lines = [header] + [",".join(f"{v:.9g}" for v in row) for row in z]
        atomic_write_text(out, "\n".join(lines) + "\n")
    print(f"wrote {len(z)} posterior means ({z.shape[1]} dimensions) to {out}")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    out = check_out(args.out, (".png",))
    by_label = args.from_label is not None or args.to_label is not None
    if by_label and (args.i is not None or args.j is not None):
        raise ConfigError("give the ends as rows (--from I --to J) or as classes (--from-label L "
                          "--to-label L), not both")
    if (args.i is None or args.j is None) and not (args.from_label is not None
                                                   and args.to_label is not None):
        raise ConfigError("give both ends: --from I --to J (rows), or --from-label L --to-label L "
                          "(a typical example of each class)")
    model, _, r = run_data(args, "an interpolation")
    ends = ((args.from_label, args.to_label), ("--from-label", "--to-label")) if by_label else (
        (args.i, args.j), ("--from", "--to"))
    i, j = interpolation_ends(model, r.x, r.y, r.labels, *ends[0], by_label, ends[1])
    save_grid(morph(model, r.x[[i, j]], None if r.y is None else r.y[[i, j]], args.steps,
                    args.spherical), out, nrow=args.steps + 2)
    kind = "spherical" if args.spherical else "linear"
    which = (f"class {args.from_label} (row {i})", f"class {args.to_label} (row {j})"
             ) if by_label else (f"input {i}", f"input {j}")
    print(f"wrote {which[0]}, {args.steps} decoded {kind} steps and {which[1]} to {out}")
    return 0


def cmd_traverse(args: argparse.Namespace) -> int:
    out = check_out(args.out, (".png",))
    model, _, x, y = run_rows(args, "a traversal")
    if not 0 <= args.index < len(x):
        raise ConfigError(f"--index {args.index} is out of range: the data has rows 0 to {len(x) - 1}")
    dims = args.dims if args.dims is not None else list(range(min(model.latent_dim, 10)))
    bad = [d for d in dims if not 0 <= d < model.latent_dim]
    if bad:
        raise ConfigError(f"--dims {bad} out of range: the latent has dimensions 0 to {model.latent_dim - 1}")
    with torch.no_grad():
        y1 = None if y is None else y[args.index: args.index + 1]
        z = model.encode(x[args.index: args.index + 1], y1).mean[0]
        images = model.decode(traversal_codes(z, dims, args.range, args.steps), y1).mean
    save_grid(images, out, nrow=args.steps)
    print(f"wrote a traversal of dimensions {dims} (rows) over +-{args.range} around input "
          f"{args.index} to {out}")
    return 0
