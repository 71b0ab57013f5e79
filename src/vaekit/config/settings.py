"""Typed configuration: one dataclass per concern, one field per option.

Each field carries its type, default, choices, bounds and help text (:func:`option`). The
command line (``vaekit train --help``), the estimator's parameters and their docs, TOML files
and the validation of a saved ``config.json`` all come from these fields, so an option is
described once. Keys are the flag names (``latent-dim`` or ``latent_dim``); an unknown key is
an error that names the closest valid one.

Library errors name the field (``latent_dim must be positive``); the CLI shows them as flags.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from typing import Any, Iterator

from vaekit.errors import ConfigError
from .options import (MAX_SEED, MAX_SIZE, OptionError, check_fields, coerce, field_kind, option,
                      own_fields, registry_names, unknown_key_message, valid_device)

# Where generated codes come from (vaekit.sampling.samplers registers one class per name; a
# test checks that the two agree): the names and their help, for the CLI, the estimator and the
# sample-quality file's schema.
SAMPLER_NAMES = ("prior", "expost", "two-stage", "pixelcnn", "marginals")
SAMPLER_HELP = ("where codes come from: prior (p(z), default), expost (a Gaussian mixture fitted "
                "to the training codes), two-stage (a second VAE on them), pixelcnn (latent vq: "
                "a gated PixelCNN over the code grid, its learned prior) or marginals (a table: "
                "expost codes, each continuous column of the draws mapped onto the training "
                "data's marginal; synthetic data, not the model's p(x)); a sampler not yet "
                "fitted is fitted first and stored in RUN/samplers (see 'vaekit fit-sampler')")
ALPHA = 50.0  # semi-supervised classification weight per labelled row: docs/semi_supervised.md
LABELLED_SHARE = 0.1  # labelled rows per semi-supervised batch: docs/semi_supervised.md


@dataclass
class ModelConfig:
    """What the model is: body, latent size and the probability families."""

    arch: str = option("mlp", "network body: mlp, conv (images), resnet (residual conv blocks) or "
                       "linear (affine; with a gaussian likelihood and learn_obs_std, probabilistic PCA)",
                       choices=registry_names("BODIES"))
    hidden: tuple[int, ...] | None = option(
        None, "hidden widths, e.g. 400 or 512,256; for conv and resnet the dense width (default: "
        "the body's own, mlp 400, conv 1024, resnet 512)", low=1, high=MAX_SIZE, metavar="WIDTHS")
    latent_dim: int = option(20, "size of the latent code z", low=1, high=MAX_SIZE, auto=True)
    top_latent_dims: tuple[int, ...] = option(
        (), "stochastic layers above the first, bottom-up, e.g. 32 or 32,16: a ladder VAE with "
        "top-down inference (Sønderby et al. 2016)", low=1, high=MAX_SIZE, metavar="SIZES")
    posterior: str = option("diagonal", "q(z|x): diagonal, full-covariance (a Cholesky factor), "
                            "or iaf (two inverse autoregressive flow steps on the diagonal "
                            "Gaussian, Kingma et al. 2016; Monte Carlo KL)",
                            choices=registry_names("POSTERIORS"))
    prior: str = option("normal", "p(z): normal, mixture (a learned Gaussian mixture) or vamp "
                        "(the VampPrior, Tomczak & Welling 2018)",
                        choices=registry_names("PRIORS"))
    latent: str = option("gaussian", "the latent code: gaussian (the posterior and prior families) "
                         "or vq (a codebook of discrete codes, VQ-VAE, van den Oord et al. 2017: "
                         "a grid of codes for conv and resnet, latent_dim codes for mlp; its "
                         "learned prior is the pixelcnn sampler; docs/vqvae.md) or deep (a deep "
                         "hierarchy of latent groups with bidirectional inference and residual "
                         "cells, NVAE/VDVAE style: groups of latent_dim and top_latent_dims, four "
                         "of latent_dim without them; docs/deep.md)",
                         choices=("gaussian", "vq", "deep"))
    codebook_size: int = option(512, "latent vq: codes in the codebook (K)", low=2, high=MAX_SIZE,
                                metavar="K")
    code_dim: int = option(64, "latent vq: numbers in each code vector (D)", low=1, high=MAX_SIZE,
                           metavar="D")
    commitment: float = option(0.25, "latent vq: weight of the commitment loss ||z_e - sg(e)||^2 "
                               "(the paper's beta, 0.25)", low=0, high=1e6)
    codebook_update: str = option("ema", "latent vq: ema (moving averages of the assigned encoder "
                                  "outputs with Laplace-smoothed counts, Razavi et al. 2019) or loss "
                                  "(the paper's codebook term, stepped by Adam)",
                                  choices=("ema", "loss"))
    codebook_decay: float = option(0.99, "latent vq: decay of the codebook's moving averages",
                                   low=0, high=0.99999)
    dead_code_steps: int = option(100, "latent vq: a code no encoder output chose for this many "
                                  "training steps in a row restarts at one of the batch's outputs "
                                  "(0: never)", low=0, high=10**9, metavar="STEPS")
    prior_components: int = option(10, "Gaussians of the mixture prior, pseudo-inputs of the vamp "
                                   "prior", low=1, high=MAX_SIZE, metavar="K")
    likelihood: str = option("bernoulli", "p(x|z): bernoulli (data in [0, 1]), continuous-bernoulli "
                             "(a density on [0, 1]), gaussian, gaussian-predicted (per-dimension "
                             "variance from the decoder), laplace, logistic-mixture (8-bit data), or table (a .csv "
                             "with a header or a .parquet file: one family per column type)",
                             choices=registry_names("LIKELIHOODS"), auto=True)
    preprocess: str = option(
        "none", "preprocessing fitted on the training split and stored with the model: none, "
        "standardize (each feature to mean 0 and sd 1) or standardize-shared (centred, one shared "
        "scale: a linear model stays probabilistic PCA of the raw data); every density and output "
        "stays in the data's own units", choices=registry_names("PREPROCESSORS"),
        auto=True)
    mixtures: int = option(5, "logistics per sub-pixel of the logistic-mixture likelihood",
                           low=1, high=256, metavar="K")
    obs_std: float = option(1.0, "standard deviation of the gaussian (or scale of the laplace) "
                            "likelihood; its start value when learned", low=0, low_open=True)
    learn_obs_std: bool = option(False, "learn the gaussian or laplace likelihood's scale (one for "
                                 "all dimensions), floored by min_obs_var; with arch linear: pPCA", auto=True)
    min_obs_var: float = option(1e-6, "floor on a learned or predicted observation variance "
                                "(Lower bounding the generative model variance)", low=0)
    min_var: float = option(1e-5, "floor on the posterior variance, so that log q(z|x) stays "
                            "bounded", low=0)
    pixel_weight: float = option(
        1.0, "objective vaegan: weight of the likelihood's own reconstruction term -log p(x|z) "
        "beside the one in the discriminator's features (0: the features alone, as Larsen et al. "
        "2016; docs/vaegan.md)", low=0, high=1e6)
    conditional: bool = option(False, "a conditional VAE (Sohn et al. 2015): the labels feed the "
                               "encoder and the decoder; sample with a label")
    num_classes: int = option(0, "classes of a conditional or semi-supervised model, from the "
                              "training labels", low=0, high=MAX_SIZE, scope="internal")
    semi_supervised: bool = option(
        False, "the semi-supervised VAE M2 (Kingma et al. 2014): a classifier q(y|x) and a code "
        "q(z|x,y), trained on labelled rows and unlabelled ones (label -1) together; it predicts "
        "classes (vaekit evaluate reports the test error)")
    stack_on: str = option(
        "", "a trained run of a one-layer VAE (M1): this model learns the codes of its frozen "
        "encoder, drawn afresh every step, and decodes through it; with semi_supervised, M1+M2 "
        "(Kingma et al. 2014)", metavar="RUN")
    stack: str = option("", "the frozen model under stack_on: its configuration, example shape "
                        "and the code dimensions kept, as JSON (copied from stack_on)",
                        scope="internal")
    schema: str = option("", "the table's column schema (types, levels, scales) as JSON, for "
                         "likelihood table; set from the data by training", scope="internal")
    alpha: float = option(ALPHA, "weight of the classification loss -log q(y|x) of each "
                          "labelled row, next to its bound (semi_supervised)", low=0, high=1e6)
    cell_dropout: float = option(
        0.0, "likelihood table: share of the observed cells hidden from the encoder at each "
        "training step (the bound stays a bound: any encoder gives one), so that it learns rows "
        "with missing cells; better imputations at some cost in log p(x) (docs/tables.md)",
        low=0, high=0.9, metavar="P")

    def validate(self) -> None:
        check_fields(self)
        if self.learn_obs_std and self.likelihood not in ("gaussian", "laplace"):
            raise OptionError("learn_obs_std applies to likelihood gaussian or laplace only",
                              "learn_obs_std", "likelihood")
        if self.conditional and self.num_classes == 1:
            raise OptionError("conditional needs at least 2 classes, got 1", "conditional")
        if self.conditional and self.prior == "vamp":
            raise OptionError("conditional does not combine with prior vamp (its pseudo-inputs "
                              "have no labels); use prior normal or mixture", "conditional", "prior")
        if self.top_latent_dims and self.posterior != "diagonal":
            raise OptionError("top_latent_dims (a ladder VAE) needs posterior diagonal",
                              "top_latent_dims", "posterior")
        if self.preprocess != "none":
            from vaekit.parts.likelihoods import LIKELIHOODS  # here: torch stays out of --help

            if not LIKELIHOODS[self.likelihood].real_valued:
                raise OptionError(f"preprocess {self.preprocess} maps data to real values, but "
                                  f"likelihood {self.likelihood} needs data in [0, 1]; use preprocess "
                                  "none or a real-valued likelihood (gaussian, laplace, "
                                  "gaussian-predicted)", "preprocess", "likelihood")
        if self.posterior == "iaf" and (self.prior == "vamp" or self.semi_supervised):
            raise OptionError("posterior iaf does not combine with prior vamp or semi_supervised "
                              "yet (both need a Gaussian posterior); use posterior diagonal or "
                              "full-covariance", "posterior", "prior", "semi_supervised")
        if self.top_latent_dims and self.prior == "vamp":
            raise OptionError("top_latent_dims (a ladder VAE) takes prior normal or mixture",
                              "top_latent_dims", "prior")
        if self.latent == "vq":
            self.check_vq()
        if self.latent == "deep":
            self.check_deep()
        if self.semi_supervised:
            self.check_semi_supervised()
        if self.likelihood == "table" or self.schema:
            self.check_table()
        if self.stack_on or self.stack:
            self.check_stack()

    def check_vq(self) -> None:
        """A VQ-VAE: one latent layer, no labels, no other posterior or prior family."""
        for name, bad in (("conditional", self.conditional), ("semi_supervised", self.semi_supervised),
                          ("top_latent_dims", self.top_latent_dims), ("stack_on", self.stack_on or self.stack),
                          ("likelihood", self.likelihood == "table"),
                          ("posterior", self.posterior != "diagonal"), ("prior", self.prior != "normal")):
            if bad:
                raise OptionError(f"latent vq does not combine with {name} {getattr(self, name)!s}: "
                                  "its posterior is the nearest codes, its prior the pixelcnn "
                                  "sampler", "latent", name)

    def check_deep(self) -> None:
        """A deep hierarchy: Gaussian groups relative to their priors, no labels (models/deep.py)."""
        for name, bad in (("conditional", self.conditional), ("semi_supervised", self.semi_supervised),
                          ("stack_on", self.stack_on or self.stack),
                          ("likelihood", self.likelihood == "table"),
                          ("posterior", self.posterior != "diagonal"), ("prior", self.prior != "normal")):
            if bad:
                raise OptionError(f"latent deep does not combine with {name} {getattr(self, name)!s}: "
                                  "each group's posterior is a diagonal Gaussian relative to its "
                                  "prior, the top's prior N(0, I)", "latent", name)

    def check_table(self) -> None:
        """Likelihood table with its schema (a valid one), an MLP or linear body, no vamp prior."""
        if self.likelihood != "table":
            raise OptionError(f"a column schema belongs to likelihood table, not {self.likelihood}",
                              "likelihood")
        if self.prior == "vamp":
            raise OptionError("likelihood table does not combine with prior vamp (its pseudo-inputs "
                              "would be rows of encoder features); use prior normal or mixture",
                              "prior", "likelihood")
        if self.arch not in ("mlp", "linear"):
            raise OptionError(f"likelihood table takes arch mlp or linear, not {self.arch}",
                              "arch", "likelihood")
        if self.schema:
            from vaekit.data.schema import Schema  # here: pandas stays out of --help

            Schema.from_json(self.schema, "the column schema (schema)")

    def check_stack(self) -> None:
        """A stacked model's top: one layer, no labels as inputs; the front from ``stack``."""
        for name in ("top_latent_dims", "conditional"):
            if getattr(self, name):
                raise OptionError(f"stack_on takes a one-layer top model without {name}",
                                  "stack_on", name)
        if self.stack:
            parse_stack(self.stack)

    def check_semi_supervised(self) -> None:
        """The parts M2 is defined with: one stochastic layer, p(z) = N(0, I), the label its own."""
        for name, bad in (("conditional", self.conditional), ("top_latent_dims", self.top_latent_dims),
                          ("prior", self.prior != "normal")):
            if bad:
                what = {"prior": "prior normal (p(z) = N(0, I))", "conditional": "no conditional "
                        "(the label already feeds its encoder and decoder)",
                        "top_latent_dims": "one stochastic layer (no top_latent_dims)"}[name]
                raise OptionError(f"semi_supervised (M2) needs {what}", "semi_supervised", name)
        if self.num_classes == 1:
            raise OptionError("semi_supervised needs at least 2 classes, got 1", "semi_supervised")


@dataclass
class TrainConfig:
    """How the model is trained. Defaults are the reference configuration."""

    epochs: int = option(10, "training epochs", low=1, high=10**7, resumable=True, auto=True)
    batch_size: int = option(128, "examples per Adam step", low=1, high=2**31 - 1)
    lr: float = option(1e-3, "Adam learning rate", low=0, low_open=True, high=1e3, auto=True)
    lr_schedule: str = option("constant", "constant, or cosine: anneal the learning rate to 0 "
                              "over the epochs, step by step (Loshchilov & Hutter 2017)",
                              choices=("constant", "cosine"), auto=True)
    objective: str = option("elbo", "elbo (averaged over k samples), iwae (the importance-"
                            "weighted bound with k samples, Burda et al. 2015), tcvae (beta "
                            "weights the total correlation of the codes alone, Chen et al. 2018) "
                            "or vaegan (the VAE-GAN, Larsen et al. 2016: reconstructions measured "
                            "in the features of a discriminator trained against them; "
                            "docs/vaegan.md)",
                            choices=registry_names("OBJECTIVES"))
    k: int = option(1, "samples per example in the training objective", low=1, high=2**16)
    beta: float = option(1.0, "weight of the KL term (beta-VAE, Higgins et al. 2017), or with "
                         "objective tcvae of the total correlation alone; 1 is the ELBO",
                         low=0, high=1e6)
    kl_warmup: int = option(0, "ramp the KL weight linearly from 0 to beta over this many epochs, "
                            "step by step (0: off); metrics still report the true ELBO",
                            low=0, high=10**7, metavar="EPOCHS")
    free_bits: float = option(0.0, "free bits (Kingma et al. 2016): each latent dimension's "
                              "batch-mean KL is penalised only above this many nats (0: off)",
                              low=0, high=1e6, metavar="NATS")
    gamma: float = option(0.1, "objective vaegan: weight gamma of the reconstruction term "
                          "against the GAN term in the decoder's loss (Larsen et al. 2016); "
                          "chosen on MNIST validation data, docs/vaegan.md", low=0, high=1e6)
    clip_grad: float = option(0.0, "clip the gradient norm to this value (0: off)", low=0,
                              metavar="NORM")
    max_skips: int = option(20, "steps with a non-finite loss or gradient are skipped and "
                            "counted; training stops after this many in a row", low=1,
                            high=10**9, metavar="N")
    max_minutes: float = option(0.0, "wall-clock budget: no epoch starts that would end past "
                                "it (0: no limit); resuming continues to epochs", low=0,
                                resumable=True, metavar="M", auto=True)
    seed: int = option(0, "seed for initialisation, shuffling and noise", low=0, high=MAX_SEED)
    device: str = option("auto", "auto (cuda when present), cpu, cuda, cuda:N or mps",
                         resumable=True)
    threads: int = option(0, "CPU threads of a training step: 0 chooses from the model's work "
                          "per step (1 for a small model, which more threads only slow down; "
                          "torch's default otherwise)", low=0, high=4096, resumable=True)
    precision: str = option("auto", "auto, fp32 or bf16 (bf16 autocast needs native bf16: "
                            "AVX512-BF16/AMX CPUs, recent GPUs); auto: bf16 where native",
                            choices=("auto", "fp32", "bf16"))
    labelled_share: float = option(
        LABELLED_SHARE, "semi_supervised: share of each batch given to labelled rows (cycled), "
        "the rest unlabelled ones, each once per epoch; at least one per batch",
        low=0, high=0.5)
    patience: int = option(0, "early stopping: stop when the validation loss has not improved "
                           "for this many epochs, and keep the best epoch's weights (0: off; needs "
                           "val_fraction)", low=0, high=10**7, metavar="EPOCHS", auto=True)
    eval_batch_size: int = option(1000, "batch size for evaluation, which needs no gradients",
                                  low=1, high=2**31 - 1)
    tensorboard: bool = option(False, "also log metrics and image grids to RUN/tensorboard "
                               "(pip install 'vaekit[tensorboard]')", scope="cli")
    mlflow: str = option("", "log parameters, per-epoch metrics, the evaluation, the report and the "
                         "model files to MLflow at this tracking URI; the flag alone: a local "
                         "SQLite store in ./mlruns (pip install 'vaekit[mlflow]')", scope="cli",
                         resumable=True, metavar="URI", const="local")

    def validate(self) -> None:
        check_fields(self)
        if not valid_device(self.device):
            raise OptionError(f"device must be auto, cpu, cuda, cuda:N or mps, got "
                              f"'{self.device}'", "device")
        if self.objective != "elbo" and self.free_bits > 0:
            raise OptionError("free_bits applies to objective elbo only", "free_bits", "objective")
        if self.objective == "tcvae" and self.kl_warmup:
            raise OptionError("kl_warmup applies to objectives elbo and iwae: tcvae weights the "
                              "total correlation, not the KL", "kl_warmup", "objective")
        if self.objective == "vaegan" and self.k != 1:
            raise OptionError("objective vaegan takes one code per example; leave k at 1",
                              "k", "objective")


@dataclass
class DataConfig:
    """Where the data comes from and how the test split is made."""

    data: str = option("", "built-in dataset name, or the absolute path of the data",
                       scope="internal")
    fingerprint: str = option("", "SHA-256 prefix of the training and test values, to recognise "
                              "the same data on resume", scope="internal")
    test_fraction: float = option(0.1, "fraction held out for testing when the data has no "
                                  "test split", low=0, high=0.99)
    val_fraction: float = option(0.0, "fraction of the training split held out for validation "
                                 "(early stopping, the kept weights); never the test split (0: "
                                 "none)", low=0, high=0.5, auto=True)
    labelled: int = option(0, "keep the labels of N training rows per class, chosen by the "
                           "seed, and mark the others unlabelled (-1), for semi_supervised; the "
                           "validation and test rows keep theirs (0: the labels as given)",
                           low=0, high=2**31 - 1, metavar="N")
    n_train: int = option(0, "examples trained on", low=0, scope="internal")
    n_val: int = option(0, "examples held out for validation", low=0, scope="internal")
    n_test: int = option(0, "examples in the test split", low=0, scope="internal")
    column: str = option("", "a table's column type, NAME=TYPE (continuous, positive, count, binary, "
                         "categorical, ordinal, ordinal:a<b<c, or drop), instead of the inferred one; "
                         "repeat the flag, or separate with commas", metavar="NAME=TYPE",
                         repeat=True)
    stream: bool = option(False, "read DATA batch by batch instead of loading it, for data "
                          "larger than memory: a .npy memory-mapped, an image folder decoded by "
                          "DataLoader workers", scope="cli")

    def validate(self) -> None:
        check_fields(self)


SECTIONS = ("model", "train", "data")


@dataclass
class RunConfig:
    """Everything that defines a run; saved as ``config.json`` in the run directory."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def validate(self) -> "RunConfig":
        self.model.validate()
        self.train.validate()
        self.data.validate()
        if self.train.objective == "tcvae" and (self.model.posterior != "diagonal"
                                                or self.model.top_latent_dims):
            raise OptionError("objective tcvae needs one stochastic layer with posterior diagonal "
                              "(its total correlation uses each dimension's marginal)",
                              "objective", "posterior")
        if self.train.free_bits > 0 and self.model.posterior == "iaf":
            raise OptionError("free_bits needs a KL per latent dimension, which posterior iaf does "
                              "not have (its KL is a Monte Carlo estimate over the whole code)",
                              "free_bits", "posterior")
        if self.train.patience and not self.data.val_fraction:
            raise OptionError("patience (early stopping) needs a validation split: set val_fraction, "
                              "e.g. 0.1", "patience", "val_fraction")
        if self.train.objective == "vaegan":
            check_vaegan(self)
        if self.model.latent == "deep" and self.train.objective not in ("elbo", "iwae"):
            raise OptionError(f"latent deep trains with objective elbo or iwae, not "
                              f"{self.train.objective}", "latent", "objective")
        if self.model.latent == "vq" and (self.train.objective != "elbo" or self.train.free_bits > 0):
            raise OptionError("latent vq trains with objective elbo and no free_bits (its KL is the "
                              "constant log K per code)", "latent", "objective", "free_bits")
        for owner in ("semi_supervised", "stack_on"):  # M2 and stacked models: what they take
            if not getattr(self.model, owner):
                continue
            for name, bad in (("objective", self.train.objective != "elbo"),
                              ("free_bits", self.train.free_bits > 0), ("stream", self.data.stream)):
                if bad:
                    raise OptionError(f"{owner} takes objective elbo, no free_bits and in-memory "
                                      "data (no stream)", owner,
                                      *dict.fromkeys((name, "objective", "free_bits", "stream")))
        if self.data.labelled and not self.model.semi_supervised:
            raise OptionError("labelled N (keep N labels per class) is for a semi-supervised model: "
                              "add semi_supervised", "labelled", "semi_supervised")
        if self.data.val_fraction and self.data.stream:
            raise OptionError("val_fraction does not combine with stream yet", "val_fraction",
                              "stream")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        """Rebuild from :meth:`to_dict`'s output, type-checking every value (a saved
        ``config.json`` is untrusted input)."""
        if not isinstance(d, dict):
            raise ConfigError(f"a config is a JSON object, got {type(d).__name__}")
        parts = {}
        for f in fields(cls):
            sub = d.get(f.name, {})
            if not isinstance(sub, dict):
                raise ConfigError(f"config section '{f.name}' must be an object, got "
                                  f"{type(sub).__name__}")
            known = {g.name: g for g in fields(f.default_factory)}
            unknown = set(sub) - set(known)
            if unknown:
                raise ConfigError(f"config section '{f.name}' has unknown keys {sorted(unknown)}; "
                                  "was it written by a newer vaekit?")
            parts[f.name] = f.default_factory(**{k: coerce(known[k], v) for k, v in sub.items()})
        return cls(**parts)

    def update(self, flat: dict[str, Any]) -> "RunConfig":
        """Set values from flat flag-named keys (``latent_dim=32``), in whichever section owns them."""
        owners = option_fields()
        for key, value in flat.items():
            name = key.replace("-", "_")
            if name not in owners or owners[name][1].metadata["scope"] == "internal":
                raise ConfigError(unknown_key_message(key, public_names()))
            section, f = owners[name]
            setattr(getattr(self, section), name, coerce(f, value))
        return self

    def flat(self) -> dict[str, Any]:
        """``{field name: value}`` over all sections."""
        return {name: getattr(getattr(self, s), name) for name, (s, _) in option_fields().items()}


def check_vaegan(cfg: RunConfig) -> None:
    """The options objective vaegan does not combine with (docs/vaegan.md says why)."""
    m = cfg.model
    if m.arch == "linear":
        raise OptionError("objective vaegan needs a body with a hidden layer, whose features "
                          "measure reconstructions: use arch mlp, conv or resnet", "arch", "objective")
    for name, on, why in (
            ("conditional", m.conditional, "its discriminator takes no labels"),
            ("top_latent_dims", bool(m.top_latent_dims), "it decodes one latent layer"),
            ("val_fraction", bool(cfg.data.val_fraction), "its loss is measured in the features "
             "of a discriminator that changes every step, so no epoch's validation loss is "
             "comparable with another's and none can be kept as the best")):
        if on:
            raise OptionError(f"{name} does not combine with objective vaegan: {why}", name,
                              "objective")


# -- field metadata, shared by validation, the CLI and the estimator -----------------------------
def option_fields() -> dict[str, tuple[str, dataclasses.Field]]:
    """Field name -> (section, field), over every section, in declaration order."""
    return {g.name: (s, g) for s in SECTIONS for g in fields(SECTION_TYPES[s])}


def public_names(scope: str | None = None) -> list[str]:
    """Option names a user sets: scope ``all`` and ``cli`` (or only the given scope)."""
    return [n for n, (_, f) in option_fields().items()
            if f.metadata["scope"] != "internal" and scope in (None, f.metadata["scope"])]


def flat_keys(cfg: RunConfig) -> dict[str, str]:
    """Flag name (underscored) -> the section holding it."""
    return {name: s for name, (s, _) in option_fields().items()}


def iter_options(scope: str) -> Iterator[tuple[str, dataclasses.Field, type]]:
    """``(name, field, kind)`` of the options in ``scope`` (``all`` also counts for ``cli``)."""
    for name, (_, f) in option_fields().items():
        s = f.metadata["scope"]
        if s == "all" or s == scope:
            yield name, f, field_kind(f)


SECTION_TYPES = {"model": ModelConfig, "train": TrainConfig, "data": DataConfig}
for _section in SECTION_TYPES.values():
    own_fields(_section)


def parse_stack(text: str) -> tuple[ModelConfig, tuple[int, ...], list[int]]:
    """The front's configuration, example shape and kept code dimensions from the ``stack``
    field's JSON; ConfigError naming the field when it is not that."""
    try:
        d = json.loads(text)
        fields = {f: coerce(ModelConfig.__dataclass_fields__[f], v) for f, v in d["model"].items()}
        front = ModelConfig(**fields)
        front.validate()
        shape, keep = tuple(int(s) for s in d["data_shape"]), [int(i) for i in d["keep"]]
    except (ValueError, KeyError, TypeError, AttributeError, ConfigError) as e:
        raise OptionError(f"stack is not a stacked model's description: {e}", "stack") from None
    if not keep or sorted(set(keep)) != keep or keep[-1] >= front.latent_dim or keep[0] < 0:
        raise OptionError("stack: the kept code dimensions must be increasing indices of the "
                          "front's latent", "stack")
    return front, shape, keep
