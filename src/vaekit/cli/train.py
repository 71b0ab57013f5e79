"""``vaekit train``: the configuration from the flags (and a TOML file), the pipeline's
training, then the report and the model card."""

from __future__ import annotations

import argparse

from vaekit import pipeline
from vaekit.compute.distributed import init_world, shutdown
from vaekit.config.options import read_toml
from vaekit.config.settings import RunConfig
from vaekit.errors import ConfigError
from vaekit.report.card import write_card
from vaekit.report.page import write_report
from vaekit.runs.directory import RunDir
from vaekit.runs.store import kept_row
from vaekit.training.tracking import log_files


# -- train ------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    world = init_world(args.device or "auto")
    try:
        status = train_in_world(args, world)
        world.barrier()  # all processes finish together before the group is torn down
        return status
    finally:
        shutdown(world)


def train_in_world(args: argparse.Namespace, world) -> int:
    """``vaekit train`` in one process of ``world`` (a world of 1 without torchrun)."""

    flags = {n: getattr(args, n) for n in args.option_names if getattr(args, n) is not None}
    if args.out is not None and not args.out.strip():
        raise ConfigError("--out needs a folder name (or leave it out for runs/<data>-<time>)")
    if world.size > 1 and args.out is None:
        raise ConfigError("under torchrun, give --out so that every process writes to one run")
    if args.resume and args.overwrite:
        raise ConfigError("--resume continues the run in --out and --overwrite replaces it: give "
                          "one of them")
    if args.resume:
        if args.out is None:
            raise ConfigError("--resume needs --out RUN_DIR, the run to continue")
        if args.config:
            raise ConfigError("cannot change --config when resuming; only --epochs, --device and "
                              "--max-minutes may change")
        cfg = pipeline.resume_config(RunDir(args.out), flags, args.data)
    else:
        cfg = RunConfig()
        given = set(flags)
        if args.config:
            toml = read_toml(args.config)
            cfg.update(toml)
            given |= {k.replace("-", "_") for k in toml}
        cfg.update(flags)
        cfg.data.data = pipeline.data_location(args.data)
    out = args.out or pipeline.default_out(args.data)
    res = pipeline.train(cfg, out=out, resume=args.resume, overwrite=args.overwrite,
                         given=None if args.resume else given, world=world)
    say = pipeline.stderr if world.is_main else (lambda s: None)
    if res.history and world.is_main:
        last = res.history[-1]
        kept = kept_row(res.history)
        key = "test_loss" if "test_loss" in kept else "val_loss" if "val_loss" in kept else "train_loss"
        print(f"done: {key.replace('_', ' ')} {kept[key]:.4f} nats at epoch {kept['epoch']} of "
              f"{last['epoch']}; run in {res.run_dir.path}")
    for note in res.notes:
        say(note)
    if world.is_main:
        if not args.no_report:
            print(f"report: {write_report(res.run_dir.path, data=res.data)}")
        write_card(res.run_dir.path, keep_foreign=True)  # a README.md of the user's stays
        if res.config.train.mlflow:
            log_files(res.run_dir.path, ["config.json", "model.safetensors", "metrics.jsonl",
                                         "report.html", "README.md"])
    return 0
