"""Data-aware defaults: the rules as a table of data kinds, the options they must never touch,
and the numbers they must reach (pPCA's exact likelihood, PCA's reconstruction error)."""

import math

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.decomposition import PCA

from vaekit.config.settings import RunConfig
from vaekit.data import Dataset, load_data
from vaekit.config.defaults import MAX_MINUTES, MIN_UPDATES, profile, resolve_auto
from vaekit.evaluation.measures import log_likelihood
from vaekit.training.trainer import Trainer
from vaekit.models.build import build_model


def grid(n, shape, levels, seed=0):
    """``n`` rows of values k / levels in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels + 1, (n, *shape), generator=g).float() / levels


def breast_cancer():
    return torch.from_numpy(load_breast_cancer().data.astype(np.float32))  # raw units, up to 4254


# data kind -> (rows, likelihood, preprocess)
CASES = {
    "binary table": (grid(300, (12,), 1), "bernoulli", "none"),
    "8-bit images": (grid(300, (1, 6, 6), 255), "gaussian", "none"),
    "grey levels in a table": (grid(300, (12,), 16), "gaussian", "none"),
    "binary images": (grid(300, (1, 6, 6), 1), "bernoulli", "none"),
    "raw real-valued table": (breast_cancer(), "gaussian-predicted", "standardize"),
    "negative values": (torch.randn(300, 5, generator=torch.Generator().manual_seed(0)),
                        "gaussian-predicted", "standardize"),
    "continuous fractions": (torch.rand(300, 5, generator=torch.Generator().manual_seed(0)),
                             "gaussian-predicted", "standardize"),
}


@pytest.mark.parametrize("kind", CASES)
def test_likelihood_and_preprocessing_follow_the_data(kind):
    x, likelihood, preprocess = CASES[kind]
    cfg = RunConfig()
    lines = resolve_auto(cfg, x, given=set())
    assert (cfg.model.likelihood, cfg.model.preprocess) == (likelihood, preprocess)
    assert cfg.model.learn_obs_std == (likelihood == "gaussian")  # one scale, learned
    assert lines[0].startswith(f"likelihood: {likelihood} (") and lines[0].endswith("override with --likelihood")
    model = build_model(cfg.model, tuple(x.shape[1:]))  # the choice builds and takes the data
    model.preprocess.fit(x)
    model.check_data(x, kind)


def test_profile_reads_streamed_rows_by_index():
    x = breast_cancer()

    class Rows:  # a row source that is not a tensor (like a memory-mapped file)
        def __len__(self):
            return len(x)

        def __getitem__(self, idx):
            return x[idx]

    p = profile(Rows())
    assert (p.n, p.shape, p.lo, p.hi) == (569, (30,), float(x.min()), float(x.max()))
    assert not p.binary and p.levels is None


def test_mnist_keeps_the_reference_configuration_exactly():
    """60,000 images in [0, 1]: 469 updates per epoch already give 10 x 469 >= MIN_UPDATES."""
    x = grid(60_000, (1, 3, 3), 255)  # only the row count, the values and the name matter
    cfg = RunConfig()
    cfg.data.data = "mnist"  # the built-in dataset: other grey images get a gaussian
    reference = RunConfig().to_dict()
    reference["data"]["data"] = "mnist"
    lines = resolve_auto(cfg, x, given=set())
    got = cfg.to_dict()
    got["model"].pop("preprocess", None)
    reference["model"].pop("preprocess", None)
    assert cfg.model.preprocess == "none"
    latent = got["model"].pop("latent_dim"), reference["model"].pop("latent_dim")
    assert latent == (8, 20)  # only because these test images have 9 pixels, not 784
    assert got == reference
    assert [line.split(":")[0] for line in lines] == ["likelihood", "preprocess", "latent-dim"]
    assert 10 * math.ceil(60_000 / 128) >= MIN_UPDATES


def test_small_data_gets_enough_updates_a_validation_split_and_a_time_cap():
    x = load_data("digits").x_train  # 1,618 rows; 1,456 after the validation split: 12 updates per epoch
    cfg = RunConfig()
    lines = resolve_auto(cfg, x, given={"latent_dim"})
    assert cfg.data.val_fraction == 0.1 and 1618 - round(161.8) == 1456
    assert cfg.train.epochs == math.ceil(MIN_UPDATES / math.ceil(1456 / 128)) == 334
    assert cfg.train.patience == 33 and cfg.train.max_minutes == MAX_MINUTES
    assert "epochs: 334 (1,456 training rows make 12 updates per epoch; 334 epochs make at least " \
           "4,000); override with --epochs" in lines
    assert cfg.train.lr == 1e-3 and cfg.train.lr_schedule == "constant"  # the reference's
    cfg.validate()


def test_given_options_are_never_changed():
    cfg = RunConfig()
    cfg.model.likelihood, cfg.model.latent_dim = "laplace", 40
    cfg.train.epochs, cfg.train.lr, cfg.train.lr_schedule = 7, 0.5, "constant"
    cfg.model.arch, cfg.model.obs_std = "linear", 3.0
    given = {"likelihood", "--latent-dim", "epochs", "lr", "lr-schedule", "arch", "obs_std"}
    lines = resolve_auto(cfg, breast_cancer(), given)
    assert (cfg.model.likelihood, cfg.model.latent_dim, cfg.train.epochs, cfg.train.lr,
            cfg.train.lr_schedule, cfg.model.obs_std) == ("laplace", 40, 7, 0.5, "constant", 3.0)
    # a fixed --obs-std is in the data's units: no scaling, nothing learned
    assert cfg.model.preprocess == "none" and not cfg.model.learn_obs_std
    assert (cfg.train.max_minutes, cfg.data.val_fraction, cfg.train.patience) == (0.0, 0.0, 0)
    assert lines == []


def test_a_given_gaussian_is_learned_and_standardized():
    """The issue's `--likelihood gaussian` on breast cancer: finite, standardized, scale learned."""
    cfg = RunConfig()
    cfg.model.likelihood = "gaussian"
    lines = resolve_auto(cfg, breast_cancer(), {"likelihood"})
    assert cfg.model.learn_obs_std and cfg.model.preprocess == "standardize"
    assert lines[0].startswith("learn-obs-std: on") and "--obs-std" in lines[0]


# -- the numbers -------------------------------------------------------------------------------
def issue_ppca(n=10_000, seed=0):
    """The issue's case: 16-D pPCA, q = 4, loadings up to 3, non-zero mean, noise 0.5."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(-3, 3, size=(16, 4))
    mu = rng.uniform(-5, 5, size=16)
    return (rng.normal(size=(n, 4)) @ w.T + mu + 0.5 * rng.normal(size=(n, 16))).astype(np.float32)


def train_resolved(cfg, x_train, x_test, given):
    """What the pipeline does with the defaults: resolve, build, carve the validation rows,
    fit the preprocessing on the rows trained on, train keeping the best validation epoch."""
    from vaekit.training.callbacks import EarlyStopping
    from vaekit.pipeline import validation_split

    lines = resolve_auto(cfg, torch.from_numpy(x_train), given)
    cfg.train.precision = "fp32"
    cfg.validate()
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, x_train.shape[1:])
    data, val = validation_split(Dataset.from_arrays("x", x_train, x_test), cfg.data.val_fraction)
    model.preprocess.fit(data.x_train)
    callbacks = [EarlyStopping(cfg.train.patience)] if val is not None else []
    Trainer(model, cfg.train, log=lambda s: None).fit(data, callbacks, val)
    return model.eval(), lines


def test_issue_ppca_case_reaches_the_exact_likelihood_without_training_flags():
    """`--arch linear --likelihood gaussian --learn-obs-std --latent-dim 4`, nothing else."""
    x = issue_ppca()
    x_train, x_test = x[:9000], x[9000:]
    cfg = RunConfig()
    cfg.model.arch, cfg.model.likelihood, cfg.model.learn_obs_std, cfg.model.latent_dim = \
        "linear", "gaussian", True, 4
    model, lines = train_resolved(cfg, x_train, x_test, {"arch", "likelihood", "learn_obs_std", "latent_dim"})
    assert (cfg.train.lr, cfg.train.lr_schedule, cfg.model.preprocess) == (0.01, "cosine", "standardize-shared")
    ll = log_likelihood(model, torch.from_numpy(x_test), 200, seed=0).mean().item()
    oracle = PCA(n_components=4).fit(x_train.astype(np.float64)).score(x_test.astype(np.float64))
    assert abs(ll - oracle) < 0.05, (ll, oracle, lines)


def test_two_dimensional_digits_beat_pca_reconstructions():
    data = load_data("digits")
    cfg = RunConfig()
    cfg.model.latent_dim = 2
    x_train, x_test = data.x_train.numpy(), data.x_test.numpy()
    model, _ = train_resolved(cfg, x_train, x_test, {"latent_dim"})
    flat = lambda a: a.reshape(len(a), -1).astype(np.float64)  # noqa: E731
    pca = PCA(n_components=2).fit(flat(x_train))
    pca_mse = ((pca.inverse_transform(pca.transform(flat(x_test))) - flat(x_test)) ** 2).mean()
    vae_mse = ((flat(model.reconstruct(data.x_test).numpy()) - flat(x_test)) ** 2).mean()
    assert vae_mse < 0.8 * pca_mse, (vae_mse, pca_mse)
