"""Data-aware defaults: options the user did not give, chosen from what the training data is.

Pure functions of a configuration and the training rows; the pipeline calls
:func:`resolve_auto` once, before the model is built, and prints the lines it returns. Every
rule is stated in the line it prints, with the flag that overrides it, and every rule reads
only the training split and the configuration (never test data or labels). Options the user
gave are never changed, so ``--epochs N`` means exactly N epochs.

The rules, and what they were measured on (docs/own_data.md, bench/own_data.py):

- likelihood: binary data get a Bernoulli, and so does the built-in ``mnist`` (the reference
  listing's configuration, so ``vaekit train mnist`` reproduces its table). Other pixel-like data
  in [0, 1] (images, or at most 256 levels) get a ``gaussian`` with one learned standard
  deviation: a Bernoulli is a density only of 0/1 values, and on grey pixels its scores ranked
  by stroke intensity (one-class MNIST on the validation split: mean AUROC 0.915 with the
  Bernoulli, 0.976 with the Gaussian). Anything else is real-valued and gets
  ``gaussian-predicted`` (mean and per-feature variance from the decoder) on standardized
  columns, which beat a learned global standard deviation on the breast-cancer, wine and
  diabetes tables by 0.7 to 8 nats per row.
- likelihood, tables: a .csv file with a header row or a .parquet file is a table of typed
  columns (:mod:`vaekit.data.schema`) and gets ``table``, one family per column, which sums
  log-probabilities over the observed cells (a headerless CSV of numbers stays an array).
- preprocess: real-valued likelihoods see standardized features (statistics of the training
  split, inverted for every output, log-Jacobian in every density); a linear model with one
  shared noise scale (probabilistic PCA) gets one shared scale, which keeps it exactly pPCA of
  the raw data (per-feature scaling cost 0.3 to 0.9 nats on generated pPCA data); pixel-like
  data under one shared scale keep their units (a border pixel that is always 0 has no spread
  to divide by).
- learn_obs_std: on for the gaussian and laplace likelihoods unless ``--obs-std`` was given.
- epochs: at least :data:`MIN_UPDATES` Adam steps (the reference's 10 MNIST epochs make 4,690),
  so small data sets train long enough (8x8 digits: 13 steps per epoch); capped by
  :data:`MAX_MINUTES` of wall-clock time. Such a lengthened run holds out
  :data:`VAL_FRACTION` of the training rows, keeps the epoch with the best validation loss and
  stops early: without it, a 30-column table's held-out log p(x) rose to +33 nats per row by
  epoch 150 and fell to -400 by epoch 1000.
- lr and lr_schedule: a linear model takes 10x the reference rate, annealed to 0 by a cosine,
  because Adam moves each weight about ``lr`` per step and its log-variances must travel several
  units, then settle on the optimum without Adam's noise floor (0.1 nats at a constant rate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Collection

import torch
from vaekit.parts.likelihoods import LIKELIHOODS
from vaekit.parts.objectives import trains_likelihood

MIN_UPDATES = 4000  # Adam steps a run gets at least when vaekit picks the epochs
MAX_EPOCHS = 10_000  # at most this many epochs when vaekit picks them
MAX_MINUTES = 15.0  # wall-clock cap on a run whose epochs vaekit lengthened
VAL_FRACTION = 0.1  # training rows held out to keep the best epoch of a lengthened run...
MIN_VAL_ROWS = 50  # ...but at least this many (up to MAX_VAL_FRACTION): 16 rows chose noise
MAX_VAL_FRACTION = 0.3
MIN_PATIENCE = 20  # early stopping waits max(MIN_PATIENCE, epochs // 10) epochs for a better one
LINEAR_LR = 1e-2  # linear bodies: 10x the reference's 1e-3, with cosine annealing
PIXEL_LEVELS = 256  # at most this many distinct values in [0, 1]: pixel-like intensities
PROFILE_ROWS = 10_000  # rows read to profile data that is not in memory
SHARED_SCALE = ("gaussian", "laplace")  # likelihoods with one observation scale for all features


@dataclass(frozen=True)
class DataProfile:
    """What the training rows are, as far as the rules need.

    Attributes
    ----------
    n : int
        Training rows.
    shape : tuple of int
        Shape of one example.
    lo, hi : float
        Smallest and largest value (of the rows read).
    binary : bool
        Every value is 0 or 1.
    levels : int or None
        Distinct values, or None when there are more than :data:`PIXEL_LEVELS`.
    """

    n: int
    shape: tuple[int, ...]
    lo: float
    hi: float
    binary: bool
    levels: int | None

    @property
    def image(self) -> bool:
        return len(self.shape) == 3

    @property
    def unit_interval(self) -> bool:
        return 0.0 <= self.lo and self.hi <= 1.0

    @property
    def features(self) -> int:
        return math.prod(self.shape)


def profile(x) -> DataProfile:
    """Profile training rows ``x`` ``(n, *shape)``: a tensor, or rows read by index (streamed
    data: :data:`PROFILE_ROWS` rows evenly spread over the file)."""
    n = len(x)
    if isinstance(x, torch.Tensor):
        rows = x
    else:
        step = max(1, n // PROFILE_ROWS)
        rows = torch.as_tensor(x[torch.arange(0, n, step)[:PROFILE_ROWS]])
    flat = rows.reshape(len(rows), -1)
    lo, hi = (float(v) for v in torch.aminmax(flat))
    sample = flat[:PROFILE_ROWS].flatten()
    distinct = torch.unique(sample[: 2**22])  # 4M values: a few hundred milliseconds at most
    levels = int(len(distinct)) if len(distinct) <= PIXEL_LEVELS else None
    # all 0 or 1: the whole pass (0.25 s on MNIST) only where the sample's values are all 0 or 1
    binary = bool(((distinct == 0) | (distinct == 1)).all()) and bool(((flat == 0) | (flat == 1)).all())
    return DataProfile(n, tuple(rows.shape[1:]), lo, hi, binary, levels)


def span(p: DataProfile) -> str:
    return f"values span [{p.lo:.4g}, {p.hi:.4g}]"


REFERENCE_DATA = ("mnist",)  # built-in data whose default is the reference listing's configuration
PIXEL_LIKELIHOOD = "gaussian"  # for intensities in [0, 1] that are not all 0 or 1


def pixel_like(p: DataProfile) -> bool:
    """Intensities in [0, 1]: images, or few distinct levels (grey values in a table)."""
    return p.unit_interval and (p.image or p.levels is not None)


def likelihood_for(p: DataProfile, data: str = "") -> tuple[str, str]:
    """The likelihood for data like ``p`` (named ``data``), and why."""
    if p.binary:
        return "bernoulli", "the values are 0 and 1"
    if data in REFERENCE_DATA and pixel_like(p):
        return "bernoulli", (f"the reference configuration of the built-in {data}: the listing's "
                             "Bernoulli decoder on grey pixels")
    if pixel_like(p):
        what = "images" if p.image else f"{p.levels} levels"
        return PIXEL_LIKELIHOOD, (f"{what} with values in [0, 1], not only 0 and 1: a Gaussian with "
                                  "one learned standard deviation is a density of the intensities "
                                  "(a Bernoulli is one only for 0/1 values); logistic-mixture gives "
                                  "8-bit images a discrete one")
    kind = "images" if p.image else "real-valued columns"
    return "gaussian-predicted", (f"{kind}: {span(p)}, not pixel-like [0, 1] data; a Gaussian "
                                  "mean and variance per feature, on standardized features")


def preprocess_for(model, given: Collection[str] = (), p: DataProfile | None = None
                   ) -> tuple[str, str]:
    """The preprocessing a model configuration needs, and why.

    Parameters
    ----------
    model : ModelConfig
        Its ``likelihood``, ``arch``, ``learn_obs_std`` are read.
    given : collection of str
        Options the user set; a given ``obs_std`` is in the data's units, so it keeps them.
    p : DataProfile, optional
        The training data; pixel-like data keep their units under a shared-scale likelihood.
    """
    lik = model.likelihood
    if lik == "table":
        return "none", "the table likelihood models each column in its own units"
    if not LIKELIHOODS[lik].real_valued:
        return "none", f"--likelihood {lik} takes data in [0, 1] as they are"
    if lik in SHARED_SCALE and "obs_std" in given and not model.learn_obs_std:
        return "none", "the --obs-std given is in the data's own units"
    if lik in SHARED_SCALE and p is not None and pixel_like(p) and model.arch != "linear":
        return "none", ("intensities in [0, 1] keep their units: one noise scale for every pixel, "
                        "and a pixel that never changes is not blown up by its tiny spread")
    if lik in SHARED_SCALE and model.arch == "linear":
        return "standardize-shared", ("features centred and divided by one shared scale, so the "
                                      "linear model stays probabilistic PCA of the raw data")
    return "standardize", "each feature to mean 0 and standard deviation 1 on the training split"


def normalise(given: Collection[str]) -> set[str]:
    """``{"--latent-dim", "lr"}`` -> ``{"latent_dim", "lr"}``: field names."""
    return {g.lstrip("-").replace("-", "_") for g in given}


TABLE_REASON = ("a table with named columns: one family per column type (the schema above), "
                "log p(x) summed over the observed cells")


def resolve_auto(cfg, x_train, given: Collection[str], table: bool = False) -> list[str]:
    """Fill the options not in ``given`` from the training rows; return one line per choice.

    Parameters
    ----------
    cfg : RunConfig
        Changed in place: ``model.likelihood``, ``model.preprocess``, ``model.learn_obs_std``,
        ``model.latent_dim``, ``train.lr``, ``train.lr_schedule``, ``train.epochs``,
        ``data.val_fraction``, ``train.patience``, ``train.max_minutes``, each only when not in
        ``given``.
    x_train : tensor or row source
        The whole training split (the validation rows are carved from it afterwards).
    given : collection of str
        Options the user set explicitly (field or flag names); never changed.
    table : bool
        The data were read as a table with a column schema (a .csv with a header row, a
        .parquet file): the likelihood is ``table``.

    Returns
    -------
    list of str
        Plain lines such as ``likelihood: gaussian-predicted (...); override with --likelihood``.
    """
    given = normalise(given)
    m, t = cfg.model, cfg.train
    p = profile(x_train)
    lines: list[str] = []
    data = cfg.data.data

    def say(name: str, value, why: str, override: str | None = None) -> None:
        flag = "--" + name.replace("_", "-")
        lines.append(f"{flag[2:]}: {value} ({why}); override with {override or flag}")

    if "likelihood" not in given:
        m.likelihood, why = ("table", TABLE_REASON) if table else likelihood_for(p, data)
        say("likelihood", m.likelihood, why)
    if "learn_obs_std" not in given and "obs_std" not in given and m.likelihood in SHARED_SCALE \
            and not m.learn_obs_std:
        m.learn_obs_std = True
        say("learn_obs_std", "on", "one standard deviation for all features, learned and "
                                   "floored by --min-obs-var", "--obs-std (a fixed value)")
    if "preprocess" not in given or getattr(m, "preprocess", "auto") == "auto":
        name, why = preprocess_for(m, given, p)
        m.preprocess = name  # a field of ModelConfig, saved in config.json with the run
        if name != "none" or "likelihood" not in given:
            say("preprocess", name, why)
    if "latent_dim" not in given and p.features <= m.latent_dim:
        m.latent_dim = max(1, p.features - 1)
        say("latent_dim", m.latent_dim, f"smaller than the {p.features} features of the data")
    if m.arch == "linear":
        if "lr" not in given:
            t.lr = LINEAR_LR
            say("lr", f"{t.lr:g}", "a linear model takes 10x the reference rate")
        if "lr_schedule" not in given:
            t.lr_schedule = "cosine"
            say("lr_schedule", t.lr_schedule, "annealed to 0, so the run ends at the optimum "
                                             "rather than Adam's noise floor")
    if "epochs" not in given and epochs_for(p.n, t.batch_size, t.epochs) != t.epochs:
        d = cfg.data
        # (not for a VAE-GAN: its validation loss is in a changing feature space, no epoch is best)
        if "val_fraction" not in given and not d.val_fraction and not getattr(d, "stream", False) \
                and trains_likelihood(t.objective):
            d.val_fraction = round(min(MAX_VAL_FRACTION, max(VAL_FRACTION, MIN_VAL_ROWS / p.n)), 3)
            say("val_fraction", f"{d.val_fraction:g}", "a long run on small data can overfit: "
                "the epoch with the best loss on these held-out training rows is kept")
        n_fit = p.n - round(p.n * d.val_fraction)  # as the pipeline's validation split leaves
        steps = max(1, math.ceil(n_fit / t.batch_size))
        t.epochs = epochs_for(n_fit, t.batch_size, t.epochs)
        updates = f"{steps} update{'s' * (steps > 1)}"
        say("epochs", t.epochs, f"{n_fit:,} training rows make {updates} per epoch; "
                                f"{t.epochs} epochs make at least {MIN_UPDATES:,}")
        if "patience" not in given and not t.patience and d.val_fraction:
            t.patience = max(MIN_PATIENCE, t.epochs // 10)
            say("patience", t.patience, f"stop once the validation loss has not improved for "
                                        f"max({MIN_PATIENCE}, epochs / 10) epochs")
        if "max_minutes" not in given and not t.max_minutes:
            t.max_minutes = MAX_MINUTES
            say("max_minutes", f"{MAX_MINUTES:g}", "the longer run stops before an epoch "
                                                   "that would end later")
    return lines


def epochs_for(n: int, batch_size: int, epochs: int) -> int:
    """At least ``epochs``, and enough for :data:`MIN_UPDATES` steps over ``n`` rows
    (at most :data:`MAX_EPOCHS`)."""
    steps = max(1, math.ceil(n / batch_size))
    return min(MAX_EPOCHS, max(epochs, math.ceil(MIN_UPDATES / steps)))
