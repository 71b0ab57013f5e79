"""``vaekit`` command line: thin subcommands over the data, model, trainer and run directory."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Sequence


from . import __version__
from .config import RunConfig, flat_keys, parse_hidden, read_toml
from .errors import ConfigError, DataError, VaekitError

SPLITS = ("all", "train", "test")


class Parser(argparse.ArgumentParser):
    """argparse with the house error format: one ``error:`` line, exit status 2."""

    def error(self, message: str):  # noqa: D102 (argparse API)
        sys.stderr.write(f"error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


def positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{s}'") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def finite_float(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{s}'") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got '{s}'")
    return v


def hidden_widths(s: str, flag: str = "--hidden") -> tuple[int, ...]:
    try:
        return parse_hidden(s, flag)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e).replace(f"{flag} must be", "expected")) from None


def latent_sizes(s: str) -> tuple[int, ...]:
    return hidden_widths(s, "--top-latent-dims")


# -- train ------------------------------------------------------------------------------------
# Flags that set RunConfig fields: (flag, argparse kwargs). Defaults stay None so that a config
# file's value is only overridden by a flag the user actually gave.
TRAIN_FLAGS = [
    ("--arch", dict(help="network body: mlp, conv, resnet (residual conv blocks), or linear (affine, no hidden layer; with a "
                         "gaussian likelihood and --learn-obs-std this is probabilistic PCA) "
                         "(default mlp)")),
    ("--hidden", dict(type=hidden_widths, help="hidden widths, e.g. 400 or 512,256 (default 400 for "
                                               "mlp; for conv and resnet the dense width, default "
                                               "1024 and 512)")),
    ("--latent-dim", dict(type=positive_int, help="size of the latent code z (default 20)")),
    ("--top-latent-dims", dict(type=latent_sizes, metavar="SIZES",
                               help="stochastic layers above the first, bottom-up, e.g. 32 or 32,16: a "
                                    "ladder VAE with top-down inference (default none)")),
    ("--posterior", dict(help="q(z|x): diagonal or full-covariance (a Cholesky factor) (default diagonal)")),
    ("--prior", dict(help="p(z): normal, mixture (learned Gaussian mixture) or vamp (VampPrior) "
                          "(default normal)")),
    ("--prior-components", dict(type=positive_int, metavar="K",
                                help="Gaussians of the mixture prior, pseudo-inputs of the vamp prior "
                                     "(default 10)")),
    ("--likelihood", dict(help="p(x|z): bernoulli (data in [0,1]), continuous-bernoulli (a density on [0,1]), "
                                   "gaussian, gaussian-predicted (per-dimension variance from the "
                                   "decoder), laplace, or logistic-mixture (8-bit data) (default bernoulli)")),
    ("--mixtures", dict(type=positive_int, metavar="K",
                        help="logistics per sub-pixel of the logistic-mixture likelihood (default 5)")),
    ("--conditional", dict(action="store_const", const=True,
                           help="a conditional VAE: the labels feed the encoder and the decoder; "
                                "sample with 'vaekit sample RUN --label L'")),
    ("--obs-std", dict(type=finite_float, help="standard deviation of the gaussian likelihood (default 1)")),
    ("--learn-obs-std", dict(action="store_const", const=True,
                             help="learn the gaussian likelihood's standard deviation (one for all "
                                  "dimensions), floored by --min-obs-var; with --arch linear: pPCA")),
    ("--min-obs-var", dict(type=finite_float, help="floor on a learned observation variance "
                                                   "(default 1e-6)")),
    ("--min-var", dict(type=finite_float, help="floor on the posterior variance (default 1e-5)")),
    ("--beta", dict(type=finite_float, help="weight of the KL term; 1 is the ELBO (default 1)")),
    ("--objective", dict(help="elbo (averaged over --k samples) or iwae (the importance-weighted bound "
                              "with --k samples, Burda et al. 2015) (default elbo)")),
    ("--k", dict(type=positive_int, help="samples per example in the objective (default 1)")),
    ("--epochs", dict(type=positive_int, help="training epochs (default 10)")),
    ("--batch-size", dict(type=positive_int, help="examples per Adam step (default 128)")),
    ("--lr", dict(type=finite_float, help="Adam learning rate (default 1e-3)")),
    ("--lr-schedule", dict(help="constant, or cosine: anneal the learning rate to 0 over --epochs, "
                                "step by step (default constant)")),
    ("--seed", dict(type=int, help="seed for initialisation, shuffling and noise (default 0)")),
    ("--device", dict(help="auto, cpu or cuda (default auto: cuda when present)")),
    ("--precision", dict(help="auto, fp32 or bf16 (bf16 autocast needs native bf16: AVX512-BF16/AMX CPUs, "
                                  "recent GPUs); default auto: bf16 where native, else fp32")),
    ("--eval-batch-size", dict(type=positive_int, help="batch size for evaluation (default 1000)")),
    ("--kl-warmup", dict(type=int, metavar="EPOCHS",
                         help="ramp the KL weight linearly from 0 to --beta over EPOCHS epochs, step "
                              "by step (default 0: off); metrics still report the true ELBO")),
    ("--free-bits", dict(type=finite_float, metavar="NATS",
                         help="free bits (Kingma et al. 2016): each latent dimension's batch-mean KL "
                              "is penalised only above NATS (default 0: off)")),
    ("--clip-grad", dict(type=finite_float, metavar="NORM",
                         help="clip the gradient norm to NORM (default 0: off)")),
    ("--max-minutes", dict(type=finite_float, metavar="M",
                           help="wall-clock budget: stop before an epoch that would end past M minutes "
                                "(default 0: no limit); --resume continues to --epochs")),
    ("--max-skips", dict(type=positive_int, metavar="N",
                         help="steps with a non-finite loss or gradient are skipped and counted "
                              "(skipped_steps in metrics); stop after N in a row (default 20)")),
    ("--stream", dict(action="store_const", const=True,
                      help="read DATA batch by batch instead of loading it, for data larger than "
                           "memory: a .npy memory-mapped, an image folder decoded by DataLoader "
                           "workers")),
    ("--tensorboard", dict(action="store_const", const=True,
                           help="also log metrics and image grids to RUN/tensorboard (needs the "
                                "tensorboard package: pip install 'vaekit[tensorboard]')")),
    ("--test-fraction", dict(type=finite_float, help="fraction held out for testing when the data "
                                                     "has no test split (default 0.1)")),
]
RESUMABLE = {"epochs", "device", "max_minutes"}  # may change when resuming; anything else would change the run


def cmd_train(args: argparse.Namespace) -> int:
    from .distributed import init_world, shutdown

    world = init_world(args.device or "auto")
    try:
        status = train_in_world(args, world)
        world.barrier()  # all processes finish together before the group is torn down
        return status
    finally:
        shutdown(world)


def train_in_world(args: argparse.Namespace, world) -> int:
    """``vaekit train`` in one process of ``world`` (a world of 1 without torchrun).

    Every process runs every check, so an error stops them all alike; only the main process
    changes the run directory and prints.
    """
    import torch

    from .data import load_data
    from .zoo import build_model
    from .run import RunDir
    from .train import Trainer

    say = (lambda *a, **k: print(*a, **k)) if world.is_main else (lambda *a, **k: None)
    flags = {f[2:].replace("-", "_"): getattr(args, f[2:].replace("-", "_")) for f, _ in TRAIN_FLAGS}
    flags = {k: v for k, v in flags.items() if v is not None}
    if world.size > 1 and args.out is None:
        raise ConfigError("under torchrun, give --out so that every process writes to one run")
    if args.resume:
        if args.out is None:
            raise ConfigError("--resume needs --out RUN_DIR, the run to continue")
        rd = RunDir(args.out)
        rd.prepare(resume=True, overwrite=False)
        cfg, _ = rd.read_config()
        saved = {k: getattr(getattr(cfg, section), k) for k, section in flat_keys(cfg).items()}
        changed = sorted(k for k, v in flags.items() if k not in RESUMABLE and v != saved[k])
        if changed or args.config:
            raise ConfigError(f"cannot change {', '.join('--' + c.replace('_', '-') for c in changed) or '--config'}"
                              " when resuming; only --epochs, --device and --max-minutes may change")
        cfg.update(flags)
        if args.data not in (cfg.data.data, str(Path(cfg.data.data))):
            raise ConfigError(f"this run was trained on '{cfg.data.data}', not '{args.data}'")
    else:
        cfg = RunConfig()
        if args.config:
            cfg.update(read_toml(args.config))
        cfg.update(flags)
        cfg.data.data = args.data
    cfg.validate()
    if not world.is_main:
        world.barrier()  # the main process fetches and caches a built-in dataset first
    data = load_data(cfg.data.data, cfg.data.test_fraction,
                     log=lambda s: say(s, file=sys.stderr), stream=cfg.data.stream)
    if world.is_main:
        world.barrier()
    if cfg.model.conditional and not args.resume:
        cfg.model.num_classes = num_classes(data)
    torch.manual_seed(cfg.train.seed)  # weight initialisation, the same in every process
    model = build_model(cfg.model, data.shape)
    trainer = Trainer(model, cfg.train, world=world)
    trainer.check(data)  # every check passes before a run directory is created or cleared
    if not args.resume:
        out = args.out or Path("runs") / f"{Path(args.data).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        rd = RunDir(out)
        rd.prepare(resume=False, overwrite=args.overwrite, dry_run=True)  # every process checks
        world.barrier()
        if world.is_main:
            rd.prepare(resume=False, overwrite=args.overwrite)
        world.barrier()
    procs = f", {world.size} processes x batch {cfg.train.batch_size}" if world.size > 1 else ""
    say(f"training on {data.name}: {len(data.x_train)} train / {len(data.x_test)} test examples "
        f"of shape {data.shape}, {sum(p.numel() for p in model.parameters()):,} parameters, "
        f"{trainer.device} {trainer.precision}{procs}; writing {rd.path}", file=sys.stderr)
    history = trainer.fit(data, rd, cfg, resume=args.resume)
    if history:
        last = history[-1]
        key = "test_loss" if "test_loss" in last else "train_loss"
        say(f"done: {key.replace('_', ' ')} {last[key]:.4f} nats after {last['epoch']} epochs; run in {rd.path}")
    if not args.no_report and world.is_main:
        from .report import write_report

        say(f"report: {write_report(rd.path, data=data)}")
    return 0


def num_classes(data) -> int:
    """Classes of a conditional model: one more than the largest training label."""
    if data.y_train is None:
        raise DataError(f"--conditional needs labels, and {data.name} has none: use a labelled "
                        "built-in dataset, an .npz with y_train/y_test, or class subfolders")
    return max(int(data.y_train.max()) + 1, 2)


# -- using a trained run ------------------------------------------------------------------------
def load_run(path: str, device: str = "cpu"):
    from .run import RunDir
    from .train import resolve_device

    return RunDir(path).load_model(resolve_device(device))


def check_out(path: str, suffixes: Sequence[str]) -> Path:
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise ConfigError(f"--out must end in {' or '.join(suffixes)}, got '{path}'")
    if out.is_dir():
        raise ConfigError(f"--out {path} is a directory; give a file name")
    return out


def rows_for(model, cfg, data: str | None, split: str):
    """Rows of DATA (or the run's own test split) as a tensor matching the model's input shape,
    with their labels when the model is conditional (else None): ``(x, y)``."""
    import numpy as np
    import torch

    from .data import load_rows

    if data is None:
        from .data import load_data

        ds = load_data(cfg.data.data, cfg.data.test_fraction, log=lambda s: print(s, file=sys.stderr),
                       stream=cfg.data.stream)
        x, y = ds.x_test, ds.y_test
        x = x[:] if not isinstance(x, torch.Tensor) else x  # the test split, read whole
        if len(x) == 0:
            raise DataError(f"the run's data {cfg.data.data} has no test split (--test-fraction 0); "
                            "give DATA, with --split train to use training rows")
    else:
        x, y = load_rows(data, split)
        x, y = torch.from_numpy(x), None if y is None else torch.from_numpy(np.asarray(y, np.int64))
    if tuple(x.shape[1:]) != model.data_shape:
        raise DataError(f"{data or cfg.data.data} has examples of shape {tuple(x.shape[1:])}, but the "
                        f"model was trained on shape {model.data_shape}")
    if not model.cond_dim:
        return x, None
    if y is None or len(y) != len(x):
        raise DataError(f"this model is conditional: {data or cfg.data.data} needs a label for every "
                        "row (a labelled built-in dataset, an .npz with labels, or class subfolders)")
    if int(y.min()) < 0 or int(y.max()) >= model.cond_dim:
        raise DataError(f"labels of {data or cfg.data.data} must lie in 0..{model.cond_dim - 1}, the "
                        "classes the model was trained on")
    return x, y.long()


def cmd_sample(args: argparse.Namespace) -> int:
    import torch

    from .images import save_grid
    from .run import write_npy

    out = check_out(args.out, (".png", ".npy"))
    model, _ = load_run(args.run, args.device)
    if out.suffix.lower() == ".png" and len(model.data_shape) != 3:
        raise ConfigError("this model's data are not images; write samples to a .npy file")
    g = torch_generator(model, args.seed)
    if args.label is not None and not model.cond_dim:
        raise ConfigError("--label needs a conditional model (trained with --conditional)")
    if model.cond_dim:
        if args.label is None:
            raise ConfigError(f"this model is conditional: give --label L (0..{model.cond_dim - 1}), the "
                              "class to draw")
        if not 0 <= args.label < model.cond_dim:
            raise ConfigError(f"--label {args.label} is out of range: the model knows classes 0 to "
                              f"{model.cond_dim - 1}")
    y = None if args.label is None else torch.full((args.n,), args.label)
    x = model.generate(args.n, g, y).float().cpu()
    if out.suffix.lower() == ".png":
        save_grid(x, out, nrow=math.ceil(math.sqrt(args.n)))
    else:
        write_npy(out, x.numpy())
    print(f"wrote {args.n} samples to {out}")
    return 0


def image_command(args: argparse.Namespace, what: str):
    """The common start of reconstruct/interpolate/traverse: output path, model, input rows."""
    out = check_out(args.out, (".png",))
    model, cfg = load_run(args.run, args.device)
    if len(model.data_shape) != 3:
        raise ConfigError(f"this model's data are not images, so {what} cannot be drawn")
    x, y = rows_for(model, cfg, args.data, args.split)
    device = next(model.parameters()).device
    return out, model, x.to(device), None if y is None else y.to(device)


def cmd_reconstruct(args: argparse.Namespace) -> int:
    import torch

    from .images import save_grid

    out, model, x, y = image_command(args, "reconstructions")
    x, y = x[: args.n], None if y is None else y[: args.n]
    with torch.no_grad():
        recon = model.decode(model.encode(x, y).mean, y).mean
    save_grid(torch.cat([x, recon]), out, nrow=len(x))
    print(f"wrote {len(x)} inputs above their reconstructions to {out}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from .evaluate import posterior_means
    from .run import write_npy

    out = check_out(args.out, (".npy", ".csv"))
    model, cfg = load_run(args.run, args.device)
    x, y = rows_for(model, cfg, args.data, args.split)
    z = posterior_means(model, x, y=y).numpy()
    if out.suffix.lower() == ".npy":
        write_npy(out, z)
    else:
        from .fileio import atomic_write_text

        header = ",".join(f"z{i}" for i in range(z.shape[1]))
        lines = [header] + [",".join(f"{v:.9g}" for v in row) for row in z]
        atomic_write_text(out, "\n".join(lines) + "\n")
    print(f"wrote {len(z)} posterior means ({z.shape[1]} dimensions) to {out}")
    return 0


def progress_bar(total: int, desc: str):
    """A tqdm bar on a terminal, else nothing: returns (update callable, close callable)."""
    if not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="ex", leave=False, dynamic_ncols=True)
    return bar.update, bar.close


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from .evaluate import evaluate
    from .fileio import write_json

    model, cfg = load_run(args.run, args.device)
    x, y = rows_for(model, cfg, args.data, args.split)
    if len(x) == 0:
        raise DataError("no examples to evaluate")
    update, close = progress_bar(len(x), f"log p(x), K={args.importance_samples}")
    try:
        res = evaluate(model, x, args.importance_samples, seed=args.seed, progress=update, y=y)
    finally:
        close()
    res = {"data": args.data or cfg.data.data, "split": args.split if args.data else "test", **res}
    write_json(Path(args.run) / "evaluation.json", res)
    if args.json:
        print(json.dumps(res))
        return 0
    rows = [("examples", f"{res['n_examples']}"),
            ("log p(x)", f"{res['log_likelihood']:.3f} +- {res['log_likelihood_stderr']:.3f} "
                         f"nats (K = {res['importance_samples']} importance samples)"),
            ("ELBO", f"{res['elbo']:.3f} nats = -(rec {res['rec']:.3f} + KL {res['kl']:.3f})"),
            ("KL estimator", res["kl_estimator"]),
            ("active units", f"{res['active_units']} of {model.latent_dim} "
                             "(Cov_x E[z_d|x] > 0.01)")]
    if res["bits_per_dim"] is not None:
        rows.append(("bits/dim", f"{res['bits_per_dim']:.4f}"))
    if res["kl_per_dim"] is not None:
        rows.append(("KL per dim", " ".join(f"{v:.2f}" for v in res["kl_per_dim"])))
    print(f"evaluation of {args.run} on {res['data']} ({res['split']}); per example, higher log p(x) "
          "is better")
    for name, value in rows:
        print(f"  {name:<13} {value}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from .evaluate import log_likelihood
    from .fileio import atomic_write_text

    out = check_out(args.out, (".csv",))
    model, cfg = load_run(args.run, args.device)
    x, y = rows_for(model, cfg, args.data, args.split)
    g = torch_generator(model, args.seed)
    update, close = progress_bar(len(x), f"log p(x), K={args.importance_samples}")
    try:
        ll = log_likelihood(model, x, args.importance_samples, generator=g, progress=update, y=y)
    finally:
        close()
    lines = ["index,log_likelihood"] + [f"{i},{v:.10g}" for i, v in enumerate(ll.tolist())]
    atomic_write_text(out, "\n".join(lines) + "\n")
    print(f"wrote log p(x) of {len(ll)} rows to {out} (outlier score: -log_likelihood)")
    return 0


def torch_generator(model, seed: int):
    import torch

    return torch.Generator(next(model.parameters()).device).manual_seed(seed)


def cmd_baseline(args: argparse.Namespace) -> int:
    from .baselines import BASELINES, fit_baseline
    from .data import load_data

    BASELINES[args.model]  # an unknown name fails before the data is loaded
    data = load_data(args.data, args.test_fraction, log=lambda s: print(s, file=sys.stderr))
    res = fit_baseline(args.model, data, args.components, args.seed)
    print(f"{res['model']} on {data.name}: test log p(x) {res['log_likelihood']:.3f} +- "
          f"{res['log_likelihood_stderr']:.3f} nats per example ({res['n_examples']} test examples, "
          f"{res['n_parameters']:,} parameters)")
    print("units: nats per example, summed over dimensions, as 'vaekit evaluate' reports. This is a "
          "density of continuous values: compare it with a VAE of a continuous likelihood "
          "(gaussian), not with a Bernoulli one, whose log p(x) is of a probability")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    out = check_out(args.out, (".html",)) if args.out else None
    print(f"wrote {write_report(args.run, out, method=args.projection)}")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    import torch

    from .images import save_grid
    from .viz import interpolation_codes

    out, model, x, y = image_command(args, "an interpolation")
    for name, i in (("--from", args.i), ("--to", args.j)):
        if not 0 <= i < len(x):
            raise ConfigError(f"{name} {i} is out of range: the data has rows 0 to {len(x) - 1}")
    with torch.no_grad():
        ends = x[[args.i, args.j]]
        z = model.encode(ends, None if y is None else y[[args.i, args.j]]).mean
        # a conditional model decodes the path with the first input's label
        path = model.decode(interpolation_codes(z[0], z[1], args.steps, args.spherical),
                            None if y is None else y[args.i: args.i + 1]).mean
    save_grid(torch.cat([ends[:1], path, ends[1:]]), out, nrow=args.steps + 2)
    print(f"wrote input {args.i}, {args.steps} decoded {'spherical' if args.spherical else 'linear'} "
          f"steps and input {args.j} to {out}")
    return 0


def cmd_traverse(args: argparse.Namespace) -> int:
    import torch

    from .images import save_grid
    from .viz import traversal_codes

    out, model, x, y = image_command(args, "a traversal")
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


def dim_list(s: str) -> list[int]:
    try:
        return [int(v) for v in s.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected dimensions like 0,1,5, got '{s}'") from None


def cmd_datasets(args: argparse.Namespace) -> int:
    from .data import DATASETS
    from .data.fetch import cache_dir

    for name, ds in DATASETS.items():
        print(f"{name:<16} {ds.description}{' [cached]' if ds.cached() else ''}")
    print(f"\ncache: {cache_dir()} (set VAEKIT_DATA to move it); or give a path: .npy, .npz "
          "(x_train, x_test[, y_train, y_test]), .csv, or a folder of images")
    return 0


# -- parser -----------------------------------------------------------------------------------
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
    data_help = "built-in dataset name (see 'vaekit datasets') or a .npy/.npz/.csv file or image folder"

    t = sub.add_parser("train", parents=[common], help="train a VAE and write a run directory",
                       description="Train a VAE on DATA. Defaults are the reference MNIST model "
                                   "(mlp 784-400-20, bernoulli, Adam 1e-3, batch 128, 10 epochs).")
    t.add_argument("data", metavar="DATA", help=data_help)
    t.add_argument("--out", help="run directory (default runs/<data>-<time>)")
    t.add_argument("--config", metavar="FILE.toml", help="TOML file whose keys are these flag names; "
                                                         "flags given here override it")
    t.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    t.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    t.add_argument("--no-report", action="store_true", help="do not write report.html at the end")
    for flag, kw in TRAIN_FLAGS:
        t.add_argument(flag, **kw)
    t.set_defaults(func=cmd_train)

    def run_command(name: str, help: str, func, data: str | None) -> argparse.ArgumentParser:
        s = sub.add_parser(name, parents=[common], help=help, description=help)
        s.add_argument("run", metavar="RUN", help="run directory written by 'vaekit train'")
        if data == "optional":
            s.add_argument("data", metavar="DATA", nargs="?", help=data_help + " (default: the run's test split)")
        elif data == "required":
            s.add_argument("data", metavar="DATA", help=data_help)
        s.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
        s.set_defaults(func=func)
        return s

    s = run_command("sample", "decode draws from the prior", cmd_sample, None)
    s.add_argument("-n", type=positive_int, default=64, help="number of samples (default 64)")
    s.add_argument("--out", required=True, help="FILE.png (a grid) or FILE.npy (decoder means)")
    s.add_argument("--seed", type=int, default=0, help="seed for the prior draws (default 0)")
    s.add_argument("--label", type=int, metavar="L",
                   help="class to draw, for a conditional model (trained with --conditional)")
    s = run_command("reconstruct", "draw inputs above their reconstructions", cmd_reconstruct, "optional")
    s.add_argument("-n", type=positive_int, default=8, help="number of inputs (default 8)")
    s.add_argument("--split", choices=SPLITS, default="test", help="part of DATA to use (default test)")
    s.add_argument("--out", required=True, help="FILE.png")
    s = run_command("embed", "posterior means, one row per input, in input order", cmd_embed, "required")
    s.add_argument("--split", choices=SPLITS, default="all",
                   help="part of DATA when it has train/test parts: all (train then test), train or test "
                        "(default all)")
    s.add_argument("--out", required=True, help="FILE.npy or FILE.csv")
    s = run_command("evaluate", "ELBO, importance-sampled log p(x) with its standard error, "
                    "active units and KL per dimension", cmd_evaluate, "optional")
    s.add_argument("--split", choices=SPLITS, default="test", help="part of DATA (default test)")
    s.add_argument("--importance-samples", "-k", type=positive_int, default=1000, metavar="K",
                   help="importance samples per example (default 1000)")
    s.add_argument("--seed", type=int, default=0, help="seed for the samples (default 0)")
    s.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    s = run_command("score", "log p(x) per row, for outlier detection (score = -log_likelihood)",
                    cmd_score, "required")
    s.add_argument("--split", choices=SPLITS, default="all", help="part of DATA (default all)")
    s.add_argument("--importance-samples", "-k", type=positive_int, default=1000, metavar="K",
                   help="importance samples per row (default 1000)")
    s.add_argument("--seed", type=int, default=0, help="seed for the samples (default 0)")
    s.add_argument("--out", required=True, help="FILE.csv with columns index,log_likelihood")
    b = sub.add_parser("baseline", parents=[common], help="test log p(x) of a classic model "
                       "(scikit-learn): gmm (EM) or ppca",
                       description="Fit a classic latent-variable model on DATA's training split and "
                                   "print its test log-likelihood in the units of 'vaekit evaluate'.")
    b.add_argument("data", metavar="DATA", help=data_help)
    b.add_argument("--model", required=True, help="gmm (Gaussian mixture fitted by EM) or ppca")
    b.add_argument("--components", type=positive_int, help="mixture components or pPCA latent "
                   "dimensions (default 10 for gmm, 20 for ppca)")
    b.add_argument("--test-fraction", type=finite_float, default=0.1,
                   help="held-out fraction when DATA has no test split (default 0.1)")
    b.add_argument("--seed", type=int, default=0, help="random_state of the fit (default 0)")
    b.set_defaults(func=cmd_baseline)
    r = sub.add_parser("report", parents=[common], help="write a self-contained HTML report of a run",
                       description="Write report.html: configuration, metrics, evaluation (after "
                                   "'vaekit evaluate'), loss curves, latent maps, diagnostics, "
                                   "reconstructions and samples; images embedded, no network.")
    r.add_argument("run", metavar="RUN", help="run directory written by 'vaekit train'")
    r.add_argument("--out", help="FILE.html (default RUN/report.html)")
    r.add_argument("--projection", choices=("pca", "tsne"), default="pca",
                   help="2-D projection of latent maps when the latent has more dimensions (default pca)")
    r.set_defaults(func=cmd_report)
    s = run_command("interpolate", "decode the path between two inputs' posterior means",
                    cmd_interpolate, "optional")
    s.add_argument("--from", dest="i", type=int, required=True, metavar="I", help="row of the first input")
    s.add_argument("--to", dest="j", type=int, required=True, metavar="J", help="row of the second input")
    s.add_argument("--steps", type=positive_int, default=10, help="decoded points (default 10)")
    s.add_argument("--spherical", action="store_true", help="spherical instead of linear interpolation")
    s.add_argument("--split", choices=SPLITS, default="test", help="part of DATA (default test)")
    s.add_argument("--out", required=True, help="FILE.png: first input, the path, second input")
    s = run_command("traverse", "vary one latent dimension at a time around an input's code",
                    cmd_traverse, "optional")
    s.add_argument("--index", type=int, default=0, help="row of the input (default 0)")
    s.add_argument("--dims", type=dim_list, help="dimensions, e.g. 0,1,5 (default the first 10)")
    s.add_argument("--range", type=finite_float, default=3.0, help="offsets span +-R (default 3)")
    s.add_argument("--steps", type=positive_int, default=9, help="values per dimension (default 9)")
    s.add_argument("--split", choices=SPLITS, default="test", help="part of DATA (default test)")
    s.add_argument("--out", required=True, help="FILE.png, one row per dimension")
    d = sub.add_parser("datasets", parents=[common], help="list the built-in datasets")
    d.set_defaults(func=cmd_datasets)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vaekit`` command; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error already printed
        return e.code if isinstance(e.code, int) else 2
    try:
        return args.func(args)
    except VaekitError as e:
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except MemoryError:
        if args.debug:
            raise
        print("error: out of memory; for data larger than memory train with --stream, or use a "
              "smaller --batch-size / --eval-batch-size", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; a run can continue with 'vaekit train DATA --out RUN --resume'", file=sys.stderr)
        return 130
