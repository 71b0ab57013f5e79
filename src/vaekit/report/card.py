"""The model card of a run: ``RUN/README.md``, a YAML header in the form model hubs read
(``library_name``, ``tags``, ``datasets``, ``license``, ``model-index`` with the metrics),
then what was trained on, the configuration, the final metrics, the evaluation with its error
bars, the software versions, and intended use and limits in plain words.

Every number comes from the run's files (``config.json``, ``metrics.jsonl``,
``evaluation.json``) as :class:`~vaekit.runs.directory.RunDir` validates them; every piece of text from a
file is quoted for YAML and escaped for Markdown, so a data name cannot break either.
"""

from __future__ import annotations

import html
import math
import platform
import re
from pathlib import Path
from typing import Any

from vaekit.version import __version__
from vaekit.config.settings import RunConfig
from vaekit.errors import ConfigError, RunDirError, VaekitError
from vaekit.io.files import atomic_write_text, read_regular
from vaekit.parts.objectives import loss_words, trains_likelihood
from vaekit.runs.directory import RunDir
from vaekit.runs.layout import CARD_MARKER as MARKER
from vaekit.runs.store import read_json
from vaekit.data import DATASETS
from vaekit.pipeline import fingerprint, run_data

CARD_NAME = "README.md"
CARD_LIMIT = 4 * 2 ** 20
LICENSE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+-]{0,63}")  # an SPDX-like id, as hubs expect
HIDDEN = {"data", "fingerprint"}  # shown under "Training data", not as configuration
MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")  # inline specials; file text never starts a line


# -- quoting -----------------------------------------------------------------------------------
def yaml_str(s: Any) -> str:
    """``s`` as a YAML double-quoted scalar: backslash, quote and every control or
    line-breaking character escaped (YAML 1.1 and 1.2 read it the same)."""
    out = []
    for ch in str(s):
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif o < 0x20 or 0x7F <= o <= 0x9F or o in (0x2028, 0x2029, 0xFEFF) or 0xD800 <= o <= 0xDFFF:
            out.append(f"\\x{o:02x}" if o <= 0xFF else f"\\u{o:04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def yaml_num(v: float | int) -> str:
    """An exact YAML number (``repr`` round-trips a float); callers leave out non-finite ones."""
    return str(v) if isinstance(v, int) else repr(float(v))


def md(s: Any) -> str:
    """Text from a file as inert Markdown on one line: HTML escaped, Markdown punctuation
    backslashed (table pipes included)."""
    text = " ".join(str(s).split())
    return MD_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))


def code(s: Any) -> str:
    """Text from a file as a Markdown code span (its content is literal; only a backtick and
    line breaks would end or split it)."""
    return "`" + " ".join(str(s).replace("`", "'").split()) + "`"


def finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def num(v: Any, digits: int = 4) -> str:
    """A number for the Markdown tables (``n/a`` when missing or not finite)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return md(v) if v is not None else "n/a"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.{digits}f}" if math.isfinite(v) else "n/a"


# -- what the card says ------------------------------------------------------------------------
def split_sizes(cfg: RunConfig) -> dict[str, int] | None:
    """Examples in the train / validation / test splits, by loading the run's data; None when
    that would need the network, the data is gone, or it changed since training."""
    if cfg.data.n_train:  # recorded by the pipeline when it trained
        return {"train": cfg.data.n_train, "validation": cfg.data.n_val, "test": cfg.data.n_test}
    spec = cfg.data.data
    if spec in DATASETS and DATASETS[spec].cache_files and not DATASETS[spec].cached():
        return None  # a card is never worth a download
    try:
        ds = run_data(cfg, log=lambda s: None, stream=cfg.data.stream)
        if cfg.data.fingerprint:
            import torch

            if isinstance(ds.x_train, torch.Tensor) and fingerprint(ds) != cfg.data.fingerprint:
                return None
    except (VaekitError, OSError):
        return None
    n = len(ds.x_train)
    val = round(n * cfg.data.val_fraction) if cfg.data.val_fraction else 0  # as pipeline.validation_split
    return {"train": n - val, "validation": val, "test": len(ds.x_test)}


def data_label(spec: str) -> str:
    """A built-in name as it is, a path by its file name (a card should not publish paths)."""
    return spec if spec in DATASETS else Path(spec).name or spec


def changed_options(cfg: RunConfig) -> list[tuple[str, Any, Any]]:
    """``(name, value, default)`` of every option that differs from vaekit's defaults."""
    defaults = RunConfig().flat()
    return [(k, v, defaults[k]) for k, v in cfg.flat().items()
            if k not in HIDDEN and v != defaults[k]]


def show(v: Any) -> str:
    if isinstance(v, tuple):
        return ",".join(map(str, v)) if v else "none"
    if v is None:
        return "none"
    return str(v).lower() if isinstance(v, bool) else str(v)


def loss_key(row: dict[str, Any]) -> str:
    return next((k for k in ("test_loss", "val_loss", "train_loss") if k in row), "train_loss")


def front_matter(name: str, cfg: RunConfig, last: dict | None, ev: dict | None,
                 license: str) -> list[str]:
    data = data_label(cfg.data.data)
    tags = ["vaekit", "variational-autoencoder", "pytorch", "density-estimation",
            f"arch-{cfg.model.arch}", f"likelihood-{cfg.model.likelihood}"]
    if cfg.model.conditional:
        tags.append("conditional")
    lines = ["---", "library_name: vaekit", f"license: {yaml_str(license)}", "tags:",
             *[f"- {yaml_str(t)}" for t in tags], "datasets:", f"- {yaml_str(data)}"]
    metrics: list[tuple[str, str, float, tuple[str, str]]] = []  # (type, name, value, (data, split))
    if last is not None:
        key = loss_key(last)
        split = key.split("_")[0]
        if finite(last.get(key)) and trains_likelihood(cfg.train.objective):
            metrics.append(("negative_elbo", f"{split} loss (negative ELBO, nats per example, "
                            f"epoch {last['epoch']})", last[key], (data, split)))
    if ev is not None:
        where = (data_label(str(ev.get("data", cfg.data.data))), str(ev.get("split", "test")))
        k = ev.get("importance_samples")
        for key, label in (("log_likelihood", f"log p(x), importance-sampled with K={k} (nats per example)"),
                           ("log_likelihood_stderr", "standard error of log p(x) (nats)"),
                           ("elbo", "ELBO (nats per example)"), ("bits_per_dim", "bits per dimension"),
                           ("reconstruction_mse", "reconstruction error (mean squared error per value)")):
            if finite(ev.get(key)):
                metrics.append((key, label, ev[key], where))
    if metrics:
        lines += ["model-index:", f"- name: {yaml_str(name)}", "  results:"]
        for where in dict.fromkeys(m[3] for m in metrics):  # one result per data and split
            on, split = where
            lines += ["  - task:", "      type: density-estimation", "      name: Density estimation",
                      "    dataset:", f"      name: {yaml_str(on)}", f"      type: {yaml_str(on)}",
                      f"      split: {yaml_str(split)}", "    metrics:"]
            for mtype, label, value, _ in (m for m in metrics if m[3] == where):
                lines += [f"    - type: {mtype}", f"      name: {yaml_str(label)}",
                          f"      value: {yaml_num(value)}"]
    return lines + ["---"]


def body(rd: RunDir, cfg: RunConfig, shape: tuple[int, ...], history: list[dict],
         ev: dict | None, trained_with: str) -> list[str]:
    import torch

    m, name = cfg.model, rd.path.resolve().name
    layers = f"{m.latent_dim}" + "".join(f"+{d}" for d in m.top_latent_dims)
    what = ("A VAE-GAN (Larsen et al. 2016: a variational autoencoder whose reconstructions are "
            "measured in the features of a discriminator trained against them)"
            if cfg.train.objective == "vaegan" else "A variational autoencoder")
    out = [f"# vaekit model: {md(name)}", "",
           f"{what} trained with vaekit: {code(m.arch)} body, a "
           f"{layers}-dimensional latent code with a {code(m.prior)} prior and {code(m.posterior)} "
           f"posterior, and a {code(m.likelihood)} likelihood"
           + (", conditioned on class labels." if m.conditional else "."), ""]
    out += ["## Training data", "", f"- data: {md(data_label(cfg.data.data))}"]
    if cfg.data.fingerprint:
        out.append(f"- fingerprint (SHA-256 prefix of the training and test values): "
                   f"{code(cfg.data.fingerprint)}")
    else:
        out.append("- fingerprint: none recorded (built-in datasets are checksum-verified when they load)")
    out.append(f"- shape of one example: {' x '.join(map(str, shape))}")
    sizes = split_sizes(cfg)
    if sizes is not None:
        out.append(f"- splits: {sizes['train']:,} train, {sizes['validation']:,} validation, "
                   f"{sizes['test']:,} test examples")
    else:
        out.append(f"- splits: not available (the data could not be read offline); test fraction "
                   f"{cfg.data.test_fraction:g}, validation fraction {cfg.data.val_fraction:g}")
    out += ["", "## Configuration", ""]
    changed = changed_options(cfg)
    if changed:
        out += ["Options that differ from vaekit's defaults (all options: `config.json`):", "",
                "| option | value | default |", "|---|---|---|"]
        out += [f"| {code(k)} | {md(show(v))} | {md(show(d))} |" for k, v, d in changed]
    else:
        out.append("vaekit's defaults throughout (all options: `config.json`).")
    out += ["", "## Final metrics", ""]
    if history:
        last = history[-1]
        out += [f"After epoch {last['epoch']} of {cfg.train.epochs}; losses are the "
                f"{loss_words(cfg.train)}, per example in nats (lower is better), as in "
                "`metrics.jsonl`.", "",
                "| metric | value |", "|---|---|"]
        out += [f"| {code(k)} | {num(v)} |" for k, v in last.items() if k != "epoch"]
        if "best_epoch" in last:
            out += ["", f"The weights kept are those of epoch {last['best_epoch']}, the lowest "
                        "validation loss."]
    else:
        out.append("No epoch has finished yet.")
    out += ["", "## Evaluation", ""]
    if ev is not None:
        k, n = ev.get("importance_samples"), ev.get("n_examples")
        out += [f"On {md(data_label(str(ev.get('data', cfg.data.data))))} ({md(ev.get('split', 'test'))}"
                f" split, {num(n)} examples); per example, in nats; higher log p(x) is better.", "",
                "| measure | value |", "|---|---|"]
        if trains_likelihood(cfg.train.objective):
            out += [f"| log p(x) | {num(ev.get('log_likelihood'), 3)} ± "
                    f"{num(ev.get('log_likelihood_stderr'), 3)} (standard error; K = {num(k)} "
                    "importance samples) |", f"| ELBO | {num(ev.get('elbo'), 3)} |"]
        else:
            out.append(f"| log p(x), ELBO | not reported: objective {code(cfg.train.objective)} does "
                       "not fit the decoder as a likelihood (a GAN term drives it too) |")
        if finite(ev.get("reconstruction_mse")):
            out.append(f"| reconstruction error | {num(ev['reconstruction_mse'], 5)} (mean squared "
                       "error per value) |")
        out.append(f"| active units | {num(ev.get('active_units'))} of "
                   f"{m.latent_dim + sum(m.top_latent_dims)} |")
        if finite(ev.get("bits_per_dim")):
            out.append(f"| bits per dimension | {num(ev['bits_per_dim'])} |")
    else:
        out.append("Not evaluated yet: `vaekit evaluate RUN` estimates log p(x) with its error "
                   "bar, and rewrites this card.")
    out += ["", "## Software", "",
            f"- trained with vaekit {md(trained_with)}; card written by vaekit {md(__version__)}",
            f"- torch {md(torch.__version__)}, Python {md(platform.python_version())} (when the card was written)",
            "", "## Intended use and limits", "",
            f"- This is a density model of {md(data_label(cfg.data.data))}: it embeds examples "
            "(posterior means), reconstructs them, draws new ones, and estimates log p(x) for data "
            "of the same kind.",
            "- It was not validated for any other data. Inputs of another kind, scale or shape "
            "still give numbers, and those numbers mean nothing.",
            "- Outlier scores (-log p(x), `vaekit score`) are relative: rank rows of the same kind "
            "against each other or against the test split. A score is not a probability, and a "
            "threshold must be chosen on data whose labels you know.",
            "- log p(x) is an importance-sampled estimate with a standard error; compare two "
            "models only when the difference is larger than a few standard errors, on the same "
            "data and split.",
            "", "## Use it", "", "```",
            "vaekit embed RUN DATA --out z.npy       # posterior means, one row per input",
            "vaekit score RUN DATA --out scores.csv  # log p(x) per row",
            "vaekit sample RUN -n 64 --out samples.npy",
            "vaekit export RUN --format onnx         # encoder and decoder as ONNX graphs",
            "```", ""]
    return out


def card_text(run: str | Path, license: str | None = None) -> str:
    """The model card of the run directory ``run`` (see :func:`write_card`)."""
    rd = RunDir(run)
    cfg, shape = rd.read_config()
    history = rd.read_metrics()
    ev = rd.read_evaluation()
    trained_with = read_json(rd.config).get("vaekit_version", "unknown")  # validated above
    head = front_matter(rd.path.resolve().name, cfg, history[-1] if history else None, ev,
                        license or "unknown")
    return "\n".join([*head, MARKER, "", *body(rd, cfg, shape, history, ev, trained_with)])


def write_card(run_dir_path: str | Path, license: str | None = None,
               keep_foreign: bool = False) -> Path | None:
    """Write (or rewrite) the model card ``RUN/README.md`` atomically and return its path.

    Parameters
    ----------
    run_dir_path : path
        A run directory written by ``vaekit train``.
    license : str, optional
        The license for the header; default the one the current card names, else ``unknown``.
    keep_foreign : bool
        When ``README.md`` exists and vaekit did not write it, return None (leaving it as it
        is) instead of raising: for the rewrite after ``train`` and ``evaluate``.

    Raises
    ------
    ConfigError
        ``license`` is not an identifier (letters, digits, ``.``, ``+``, ``-``).
    RunDirError
        The run is missing or damaged, or ``README.md`` exists and was not written by vaekit
        (it is never replaced).
    """
    if license is not None and not LICENSE.fullmatch(license):
        raise ConfigError(f"--license takes a license identifier such as mit, apache-2.0 or "
                          f"cc-by-4.0, got {license!r}")
    rd = RunDir(run_dir_path)
    rd.read_config()  # a missing or foreign folder fails here, before the lock creates anything
    path = rd.path / CARD_NAME
    with rd.lock():
        if path.exists() or path.is_symlink():
            current = b"" if path.is_symlink() else read_regular(path, CARD_LIMIT, RunDirError)
            if MARKER.encode() not in current:
                if keep_foreign:
                    return None
                raise RunDirError(f"{path} was not written by vaekit; refusing to replace it "
                                  "(move it away to get a model card)")
            head = current.split(b"\n---\n")[0]
            kept = re.search(rb'^license: "([A-Za-z0-9.+-]{1,64})"$', head, re.M)
            license = license or (kept.group(1).decode() if kept else None)
        atomic_write_text(path, card_text(rd.path, license))
    return path


__all__ = ["write_card", "card_text", "yaml_str"]
