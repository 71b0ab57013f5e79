"""``vaekit.VAE``: the scikit-learn style estimator over the model and trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from .config import DataConfig, ModelConfig, RunConfig, TrainConfig
from .data.base import Dataset, check_features
from .errors import DataError
from .evaluate import posterior_means
from .model import VAEModel
from .zoo import build_model
from .run import RunDir
from .train import Trainer, resolve_device


class VAE(TransformerMixin, BaseEstimator):
    """Variational autoencoder with the scikit-learn estimator contract.

    Parameters
    ----------
    arch : {'mlp', 'conv', 'resnet', 'linear'}
        Network body; ``conv`` and ``resnet`` need images ``(n, C, H, W)``.
    hidden : tuple of int, optional
        Hidden widths (mlp) or the dense width (conv); None takes the body's default.
    latent_dim : int
        Size of z.
    likelihood : str
        p(x|z), a name from ``--likelihood`` (``bernoulli``, ``gaussian``, ...); bernoulli needs
        data in [0, 1].
    obs_std : float
        Standard deviation of the gaussian likelihood (its start value when learned).
    learn_obs_std : bool
        Learn one global standard deviation of the gaussian likelihood (with ``arch='linear'``:
        probabilistic PCA).
    posterior : {'diagonal', 'full-covariance'}
        q(z|x) family.
    prior : {'normal', 'mixture', 'vamp'}
        p(z) family.
    top_latent_dims : tuple of int
        Stochastic layers above the first (a ladder VAE); empty for one layer.
    conditional : bool
        A conditional VAE: ``fit(X, y)`` learns p(x|z, y); ``transform``, ``reconstruct``,
        ``score_samples`` and ``score`` then take the labels ``y`` too, and ``sample`` a ``label``.
    objective : {'elbo', 'iwae'}
        Training objective; ``k`` samples per example.
    k : int
        Samples per example in the objective.
    beta : float
        KL weight; 1 is the ELBO.
    epochs, batch_size, lr : int, int, float
        Adam training schedule.
    precision : {'auto', 'fp32', 'bf16'}
        ``auto`` trains in bf16 where the hardware has it natively, else fp32.
    device : str
        ``auto``, ``cpu`` or ``cuda``.
    random_state : int, optional
        Seed for initialisation, shuffling and noise; None draws one.
    verbose : bool
        Print one line per epoch.

    Attributes
    ----------
    model_ : VAEModel
        The trained torch module.
    history_ : list of dict
        Per-epoch training metrics (``train_loss`` etc., nats per example).
    data_shape_ : tuple of int
        Shape of one example.
    n_features_in_ : int
        Number of values per example.

    Examples
    --------
    >>> vae = VAE(latent_dim=2, epochs=5, random_state=0).fit(X)   # doctest: +SKIP
    >>> Z = vae.transform(X)                                        # doctest: +SKIP
    """

    def __init__(self, arch: str = "mlp", hidden: tuple[int, ...] | None = None,
                 latent_dim: int = 20, likelihood: str = "bernoulli", obs_std: float = 1.0,
                 learn_obs_std: bool = False, posterior: str = "diagonal", prior: str = "normal",
                 top_latent_dims: tuple[int, ...] = (), conditional: bool = False,
                 objective: str = "elbo", k: int = 1,
                 beta: float = 1.0, epochs: int = 10, batch_size: int = 128, lr: float = 1e-3,
                 precision: str = "auto", device: str = "auto", random_state: int | None = None,
                 verbose: bool = False) -> None:
        self.arch = arch
        self.hidden = hidden
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.obs_std = obs_std
        self.learn_obs_std = learn_obs_std
        self.posterior = posterior
        self.prior = prior
        self.top_latent_dims = top_latent_dims
        self.conditional = conditional
        self.objective = objective
        self.k = k
        self.beta = beta
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.precision = precision
        self.device = device
        self.random_state = random_state
        self.verbose = verbose

    def _run_config(self, num_classes: int = 0) -> RunConfig:
        seed = (int(np.random.SeedSequence().entropy % 2**31) if self.random_state is None
                else int(self.random_state))
        hidden = None if self.hidden is None else tuple(np.atleast_1d(self.hidden).astype(int).tolist())
        return RunConfig(
            ModelConfig(arch=self.arch, hidden=hidden, latent_dim=self.latent_dim,
                        likelihood=self.likelihood, obs_std=self.obs_std,
                        learn_obs_std=self.learn_obs_std, posterior=self.posterior, prior=self.prior,
                        top_latent_dims=tuple(int(d) for d in self.top_latent_dims),
                        conditional=self.conditional, num_classes=num_classes),
            TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, beta=self.beta,
                        objective=self.objective, k=self.k,
                        seed=seed, device=self.device, precision=self.precision),
            DataConfig(data="array", test_fraction=0.0)).validate()

    def fit(self, X, y=None) -> "VAE":
        """Train on ``X`` of shape ``(n, d)``, ``(n, H, W)`` or ``(n, C, H, W)``; returns self.

        ``y`` (integer labels 0..C-1, one per row) is used by a conditional model and ignored
        otherwise.
        """
        x = as_examples(X)
        labels = as_labels(y, len(x)) if self.conditional else None
        cfg = self._run_config(int(labels.max()) + 1 if labels is not None else 0)
        torch.manual_seed(cfg.train.seed)  # weight initialisation
        model = build_model(cfg.model, x.shape[1:])
        data = Dataset.from_arrays("X", x, x[:0], labels, None if labels is None else labels[:0])
        trainer = Trainer(model, cfg.train, log=print if self.verbose else (lambda s: None),
                          progress=False)
        self.history_ = trainer.fit(data)
        self._set_fitted(trainer.model.eval(), cfg)
        return self

    def _set_fitted(self, model: VAEModel, cfg: RunConfig) -> None:
        self.model_ = model
        self.config_ = cfg
        self.data_shape_ = model.data_shape
        self.n_features_in_ = int(np.prod(model.data_shape))

    def _examples(self, X) -> torch.Tensor:
        check_is_fitted(self, "model_")
        x = as_examples(X)
        if x.shape[1:] != self.data_shape_:
            raise DataError(f"X has examples of shape {x.shape[1:]}, but this model was fitted on "
                            f"shape {self.data_shape_}")
        return torch.from_numpy(x)

    def _labels(self, y, n: int) -> torch.Tensor | None:
        """Labels for a conditional model (required), None otherwise."""
        if not self.model_.cond_dim:
            return None
        if y is None:
            raise DataError("this VAE is conditional: pass the labels y as well")
        return torch.from_numpy(as_labels(y, n)).to(self._device())

    def fit_transform(self, X, y=None, **fit_params) -> np.ndarray:
        """``fit(X, y)`` then ``transform(X, y)``."""
        return self.fit(X, y, **fit_params).transform(X, y)

    def transform(self, X, y=None) -> np.ndarray:
        """Posterior means E[z|x], ``(n, latent_dim)`` (``y``: labels, for a conditional model)."""
        x = self._examples(X)  # checks fitted first
        return posterior_means(self.model_, x, y=self._labels(y, len(x))).numpy()

    @torch.no_grad()
    def reconstruct(self, X, y=None) -> np.ndarray:
        """Decoder means at the posterior means, shaped like the fitted examples."""
        x = self._examples(X).to(self._device())
        labels = self._labels(y, len(x))
        return self.model_.decode(self.model_.encode(x, labels).mean, labels).mean.float().cpu().numpy()

    @torch.no_grad()
    def sample(self, n: int = 1, random_state: int | None = None, label: int | None = None) -> np.ndarray:
        """Decoder means of ``n`` prior draws, ``(n, *data_shape)``; of class ``label`` when conditional."""
        check_is_fitted(self, "model_")
        g = torch.Generator(self._device())
        g.manual_seed(random_state) if random_state is not None else g.seed()
        if self.model_.cond_dim and label is None:
            raise DataError("this VAE is conditional: pass label=L, the class to draw")
        if label is not None and not self.model_.cond_dim:
            raise DataError("label applies to a conditional VAE (conditional=True)")
        labels = None if label is None else self._labels([label] * n, n)
        return self.model_.generate(n, g, labels).float().cpu().numpy()

    def score_samples(self, X, n_importance: int = 1000, y=None) -> np.ndarray:
        """Importance-sampled log p(x) per row in nats (higher is more typical).

        ``-score_samples(X)`` is an outlier score. Samples are drawn from a generator seeded
        with ``random_state`` (0 when None), so the same call gives the same numbers.

        Parameters
        ----------
        X : array-like of shape (n, d) or (n, C, H, W)
        n_importance : int
            Importance samples per row (Burda et al. 2015); more is tighter and slower.
        """
        from .evaluate import log_likelihood

        x = self._examples(X)
        g = torch.Generator(self._device()).manual_seed(self.random_state or 0)
        return log_likelihood(self.model_, x, n_importance, generator=g,
                              y=self._labels(y, len(x))).numpy()

    def score(self, X, y=None, n_importance: int = 1000) -> float:
        """Mean log p(x) per row in nats, as scikit-learn's density estimators report (log p(x|y)
        for a conditional model)."""
        return float(self.score_samples(X, n_importance, y).mean())

    def _device(self) -> torch.device:
        return next(self.model_.parameters()).device

    def save(self, path: str | Path) -> None:
        """Write ``config.json`` and ``model.safetensors`` to the directory ``path``."""
        check_is_fitted(self, "model_")
        rd = RunDir(path)
        rd.path.mkdir(parents=True, exist_ok=True)
        rd.write_config(self.config_, self.data_shape_)
        rd.write_model(self.model_)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> "VAE":
        """A fitted estimator from a directory written by :meth:`save` or ``vaekit train``."""
        model, cfg = RunDir(path).load_model(resolve_device(device))
        m, t = cfg.model, cfg.train
        est = cls(arch=m.arch, hidden=m.hidden, latent_dim=m.latent_dim, likelihood=m.likelihood,
                  obs_std=m.obs_std, learn_obs_std=m.learn_obs_std, posterior=m.posterior,
                  prior=m.prior, top_latent_dims=m.top_latent_dims, conditional=m.conditional,
                  objective=t.objective, k=t.k,
                  beta=t.beta, epochs=t.epochs, batch_size=t.batch_size, lr=t.lr,
                  precision=t.precision, device=device, random_state=t.seed)
        est._set_fitted(model, cfg)
        return est

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags


def as_labels(y, n: int) -> np.ndarray:
    """Integer class labels ``(n,)`` int64, >= 0, or a DataError."""
    if y is None:
        raise DataError("a conditional VAE needs labels: call fit(X, y)")
    arr = np.asarray(y).reshape(-1)
    if len(arr) != n:
        raise DataError(f"y has {len(arr)} labels for {n} rows")
    if arr.dtype.kind not in "iub" and not (arr.dtype.kind == "f" and np.all(arr == np.round(arr))):
        raise DataError(f"labels must be integers 0, 1, ..., got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if n and arr.min() < 0:
        raise DataError(f"labels must be >= 0, got {arr.min()}")
    return arr


def as_examples(X) -> np.ndarray:
    """``(n, d)`` or ``(n, C, H, W)`` float32; ``(n, H, W)`` gains a channel axis."""
    try:
        x = np.asarray(X)
    except (ValueError, TypeError) as e:
        raise DataError(f"X is not an array of numbers: {e}") from None
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim not in (2, 4):
        raise DataError(f"X must have shape (n, d), (n, H, W) or (n, C, H, W); got {x.shape}")
    return check_features(x, "X")
