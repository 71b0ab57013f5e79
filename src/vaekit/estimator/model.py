"""``vaekit.VAE``: the scikit-learn style estimator, over :mod:`vaekit.pipeline`.

Its parameters are the configuration's fields one to one (``random_state`` is the seed), so
``VAE.load(run).get_params()`` describes the run and ``clone(VAE.load(run)).fit(X)`` trains the
same model again. The parameter docs below are generated from the fields' help texts.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils._available_if import available_if
from sklearn.utils.validation import check_array, check_is_fitted, validate_data

from vaekit import pipeline
from vaekit.models.kinds import require
from vaekit.config.settings import ALPHA, LABELLED_SHARE, RunConfig, iter_options
from vaekit.data.base import Dataset, as_labels, check_features
from vaekit.errors import ConfigError, DataError
from vaekit.evaluation.measures import log_likelihood, posterior_means
from vaekit.models.vae import VAEModel
from vaekit.runs.directory import RunDir
from .draw import DrawMixin
from .tables import TableMixin
from vaekit.data.files import split_indices
from vaekit.sampling.samplers import save as save_sampler

# Where the estimator's default differs from the CLI's, and why. Options vaekit may choose from
# the data (``auto`` fields) default to "auto": a value passed explicitly, even the CLI's default,
# is then kept, which only a sentinel can tell apart under clone().
ESTIMATOR_DEFAULTS = {
    # fit(X) learns from all of X, as scikit-learn estimators do; hold out a part for the
    # per-epoch test metrics in history_ with test_fraction > 0.
    "test_fraction": 0.0,
}
MAX_DENSE = 2**31  # values of a sparse X made dense (8 GiB of float32)
PARAM_OF_FIELD = {"seed": "random_state"}
FLOAT64_COPIES: "weakref.WeakKeyDictionary[VAEModel, VAEModel]" = weakref.WeakKeyDictionary()


class VAE(DrawMixin, TableMixin, ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Variational autoencoder with the scikit-learn estimator contract.

    ``fit(X)`` trains; ``transform(X)`` gives posterior means; ``score_samples(X)`` the
    importance-sampled log p(x) of each row (higher is more typical); ``sample``,
    ``reconstruct``, ``inverse_transform``, ``save`` and ``load`` complete it.

    A pandas DataFrame (with text, category or boolean columns and missing cells, or not) is a
    table unless another likelihood is given: its column schema is inferred
    (:mod:`vaekit.data.schema`; ``column`` overrides a type), each column gets its own family,
    log-likelihoods sum over the observed cells, ``sample`` and ``reconstruct`` return
    DataFrames with the table's columns and types, and :meth:`impute` fills missing cells.

    Parameters
    ----------
    {parameters}
    random_state : int, numpy.random.RandomState or None
        Seed for initialisation, shuffling and noise; None draws a fresh one at each fit. The
        global torch random state is never touched.
    verbose : bool
        Print the data line and one line per epoch.

    Attributes
    ----------
    model_ : VAEModel
        The trained torch module.
    config_ : RunConfig
        The complete configuration of the fit.
    history_ : list of dict
        Per-epoch training metrics (``train_loss`` etc., nats per example).
    data_shape_ : tuple of int
        Shape of one example.
    n_features_in_ : int
        Number of values per example.
    feature_names_in_ : ndarray of str
        Column names, when ``X`` was a DataFrame with string column names.
    samplers_ : dict
        Samplers of codes fitted by :meth:`fit_sampler` (name -> :class:`vaekit.sampling.samplers.Sampler`).

    Examples
    --------
    >>> vae = VAE(latent_dim=2, epochs=5, random_state=0).fit(X)   # doctest: +SKIP
    >>> Z = vae.transform(X)                                        # doctest: +SKIP
    """

    def __init__(self, arch: str = "mlp", hidden: tuple[int, ...] | None = None,
                 latent_dim: int | str = "auto", top_latent_dims: tuple[int, ...] = (),
                 posterior: str = "diagonal", prior: str = "normal", latent: str = "gaussian",
                 codebook_size: int = 512, code_dim: int = 64, commitment: float = 0.25,
                 codebook_update: str = "ema", codebook_decay: float = 0.99,
                 dead_code_steps: int = 100, prior_components: int = 10,
                 likelihood: str = "auto", preprocess: str = "auto", mixtures: int = 5,
                 obs_std: float = 1.0, learn_obs_std: bool | str = "auto",
                 min_obs_var: float = 1e-6, min_var: float = 1e-5, pixel_weight: float = 1.0,
                 conditional: bool = False, semi_supervised: bool = False, stack_on: str = "",
                 alpha: float = ALPHA, cell_dropout: float = 0.0,
                 epochs: int | str = "auto", batch_size: int = 128, lr: float | str = "auto",
                 lr_schedule: str = "auto", objective: str = "elbo", k: int = 1,
                 beta: float = 1.0, kl_warmup: int = 0, free_bits: float = 0.0,
                 gamma: float = 0.1, clip_grad: float = 0.0, max_skips: int = 20,
                 max_minutes: float | str = "auto",
                 random_state: int | np.random.RandomState | None = None, device: str = "auto",
                 threads: int = 0, precision: str = "auto", labelled_share: float = LABELLED_SHARE,
                 patience: int | str = "auto",
                 eval_batch_size: int = 1000, test_fraction: float = 0.0,
                 val_fraction: float | str = "auto", labelled: int = 0, column: str = "",
                 verbose: bool = False) -> None:
        self.arch = arch
        self.hidden = hidden
        self.latent_dim = latent_dim
        self.top_latent_dims = top_latent_dims
        self.posterior = posterior
        self.prior = prior
        self.latent = latent
        self.codebook_size = codebook_size
        self.code_dim = code_dim
        self.commitment = commitment
        self.codebook_update = codebook_update
        self.codebook_decay = codebook_decay
        self.dead_code_steps = dead_code_steps
        self.prior_components = prior_components
        self.likelihood = likelihood
        self.preprocess = preprocess
        self.mixtures = mixtures
        self.obs_std = obs_std
        self.learn_obs_std = learn_obs_std
        self.min_obs_var = min_obs_var
        self.min_var = min_var
        self.pixel_weight = pixel_weight
        self.conditional = conditional
        self.semi_supervised = semi_supervised
        self.stack_on = stack_on
        self.alpha = alpha
        self.cell_dropout = cell_dropout
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.lr_schedule = lr_schedule
        self.objective = objective
        self.k = k
        self.beta = beta
        self.kl_warmup = kl_warmup
        self.free_bits = free_bits
        self.gamma = gamma
        self.clip_grad = clip_grad
        self.max_skips = max_skips
        self.max_minutes = max_minutes
        self.labelled_share = labelled_share
        self.random_state = random_state
        self.device = device
        self.threads = threads
        self.precision = precision
        self.patience = patience
        self.eval_batch_size = eval_batch_size
        self.test_fraction = test_fraction
        self.val_fraction = val_fraction
        self.labelled = labelled
        self.column = column
        self.verbose = verbose

    # -- configuration ---------------------------------------------------------------------
    def _seed(self) -> int:
        rs = self.random_state
        if rs is None:
            return int(np.random.SeedSequence().entropy % 2**63)
        if isinstance(rs, np.random.RandomState):
            return int(rs.randint(0, 2**31 - 1))
        if isinstance(rs, (bool, np.bool_)) or not isinstance(rs, (int, np.integer)):
            raise ConfigError(f"random_state must be an int, a numpy RandomState or None, got {rs!r}")
        return int(rs)

    def _config(self) -> tuple[RunConfig, set[str]]:
        """The run's configuration, and the options given (every one not left at ``"auto"``)."""
        params = self.get_params()
        flat: dict[str, Any] = {}
        for name, _, kind in iter_options("estimator"):
            value = params[PARAM_OF_FIELD.get(name, name)]
            if isinstance(value, str) and value == "auto" and name not in ("device", "precision"):
                continue  # vaekit chooses it from the data (vaekit.config.defaults), as the CLI does
            if kind is tuple and value is not None and not isinstance(value, str):
                value = tuple(np.atleast_1d(value).tolist())
            if isinstance(value, np.generic):
                value = value.item()
            flat[name] = value
        flat["seed"] = self._seed()
        cfg = RunConfig().update(flat)
        cfg.data.data = "array"
        return cfg.validate(), set(flat)

    # -- tables ----------------------------------------------------------------------------
    # -- input checks ----------------------------------------------------------------------
    def _x(self, X, reset: bool) -> np.ndarray:
        """``X`` as examples ``(n, d)`` or ``(n, C, H, W)``; checks names and sizes against the fit."""
        if hasattr(X, "tocsr"):  # scipy sparse (a ColumnTransformer's one-hot output): dense rows
            if np.prod(X.shape, dtype=np.float64) > MAX_DENSE:
                raise DataError(f"X is a sparse matrix of shape {X.shape}, too large to hold as "
                                f"dense rows ({MAX_DENSE:,} values at most)")
            X = X.toarray()
        x = np.asarray(X) if not hasattr(X, "iloc") else X
        try:
            if getattr(x, "ndim", 2) == 2:
                x = validate_data(self, X, reset=reset, dtype=[np.float32, np.float64],
                                  ensure_min_samples=1)
            else:
                x = check_array(x, allow_nd=True, dtype=[np.float32, np.float64],
                                ensure_min_samples=1)
        except ValueError as e:  # TypeErrors (objects that are not numbers) stay
            raise DataError(str(e)) from None
        if x.ndim == 3:
            x = x[:, None]  # (n, H, W) grey images gain a channel axis
        if x.ndim not in (2, 4):
            raise DataError(f"X must have shape (n, d), (n, H, W) or (n, C, H, W); got {x.shape}")
        x = check_features(x, "X")
        if not reset and x.shape[1:] != self.data_shape_:
            raise DataError(f"X has examples of shape {x.shape[1:]}, but this model was fitted on "
                            f"shape {self.data_shape_}")
        return x

    def _model_for(self, x: torch.Tensor) -> VAEModel:
        """The model in ``x``'s precision: float64 input runs a float64 copy (made once), so
        results do not depend on which rows share a call beyond float64 rounding."""
        if x.dtype != torch.float64:
            return self.model_
        if self.model_ not in FLOAT64_COPIES:  # kept outside the estimator: transform changes no state
            import copy

            FLOAT64_COPIES[self.model_] = copy.deepcopy(self.model_).double().eval()
        return FLOAT64_COPIES[self.model_]

    def _rows(self, X, y) -> tuple[torch.Tensor, torch.Tensor | None]:
        check_is_fitted(self, "model_")
        if self.schema_ is not None:
            return self._table_rows(X), None
        X = X.toarray() if hasattr(X, "tocsr") and np.prod(X.shape, dtype=np.float64) <= MAX_DENSE else X
        x = torch.from_numpy(self._x(X, reset=False)).to(self.model_.device)
        if getattr(X, "dtype", None) == np.float64:  # keep the caller's precision
            x = torch.from_numpy(np.asarray(X, np.float64).reshape(len(x), *self.data_shape_))
        labels = None
        if self.model_.cond_dim:
            if y is None:
                raise DataError("this VAE is conditional: pass the labels y as well")
            labels = torch.from_numpy(as_labels(y, len(x))).to(self.model_.device)
        pipeline.check_rows(self.model_, x, labels, "X")
        return x, labels

    def _out(self, a: torch.Tensor, X) -> np.ndarray:
        """A result in the input's float precision (float64 and float16 in, the same out; other
        input gives float32). float16 is computed in float32, then rounded."""
        given = getattr(X, "dtype", None)
        dtype = given if given in (np.float64, np.float16) else np.float32
        return a.detach().cpu().numpy().astype(dtype, copy=False)

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, X, y=None) -> "VAE":
        """Train on ``X`` of shape ``(n, d)``, ``(n, H, W)`` or ``(n, C, H, W)``; returns self.

        ``y`` (integer labels 0..C-1, one per row) is used by a conditional model, and by a
        semi-supervised one, for which -1 marks an unlabelled row; other models ignore it.
        """
        cfg, given = self._config()
        if self._is_table(X):
            return self._fit_table(X, cfg, given)
        x = self._x(X, reset=True)
        labels = (as_labels(y, len(x), unlabelled=self.semi_supervised)
                  if self.conditional or self.semi_supervised else None)
        train, test = split_indices(len(x), cfg.data.test_fraction, "X")
        part = (lambda a, i: None if a is None else a[i])
        data = Dataset.from_arrays("X", x[train], x[test], part(labels, train), part(labels, test))
        log = print if self.verbose else (lambda s: None)
        res = pipeline.train(cfg, data, given=given, log=log, progress=False,
                             epoch_log=self.verbose)
        self.history_ = res.history
        self._set_fitted(res.model, res.config)
        return self

    def _set_fitted(self, model: VAEModel, cfg: RunConfig) -> None:
        self.model_ = model
        self.config_ = cfg
        self.data_shape_ = model.data_shape
        self.n_features_in_ = int(np.prod(model.data_shape))
        self._n_features_out = model.latent_dim
        if getattr(model, "semi_supervised", False):
            self.classes_ = np.arange(model.classes)
        self.samplers_: dict = {}
        self._run_path: Path | None = None
        self.schema_ = pipeline.table_schema(model)  # the column schema of a table, else None
        if self.schema_ is not None:
            names = self.schema_.names + [n for n, _ in self.schema_.dropped]
            self.feature_names_in_ = np.array(names, dtype=object)
            self.n_features_in_ = len(names)

    def fit_transform(self, X, y=None, **fit_params) -> np.ndarray:
        """``fit(X, y)`` then ``transform(X, y)``."""
        return self.fit(X, y, **fit_params).transform(X, y)

    # -- using the model -------------------------------------------------------------------
    def transform(self, X, y=None) -> np.ndarray:
        """Posterior means E[z|x], ``(n, latent_dim)`` (``y``: labels, for a conditional model)."""
        x, labels = self._rows(X, y)
        return self._out(posterior_means(self._model_for(x), x, y=labels), X)

    @torch.no_grad()
    def reconstruct(self, X, y=None) -> np.ndarray:
        """Decoder means at the posterior means, shaped like the fitted examples."""
        x, labels = self._rows(X, y)
        model = self._model_for(x)
        if self.schema_ is not None:  # a DataFrame in the table's columns and types
            return pipeline.table_frame(model, model.reconstruct(x, labels))
        return self._out(model.reconstruct(x.to(model.device), labels), X)

    @torch.no_grad()
    def inverse_transform(self, Z, y=None) -> np.ndarray:
        """Decoder means of the codes ``Z`` ``(n, latent_dim)``: data from latent codes."""
        check_is_fitted(self, "model_")
        z = torch.as_tensor(check_array(Z, dtype=[np.float32, np.float64]), dtype=torch.float32)
        if z.shape[1] != self.model_.latent_dim:
            raise DataError(f"Z has {z.shape[1]} columns, but the latent has {self.model_.latent_dim}")
        labels = None if not self.model_.cond_dim else torch.from_numpy(as_labels(y, len(z)))
        model = self.model_
        if self.schema_ is not None:
            return pipeline.table_frame(model, model.decode(z.to(model.device), labels).mean)
        return self._out(model.decode(z.to(model.device), labels).mean, Z)

    @available_if(lambda self: bool(self.semi_supervised))
    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities q(y|x) of a semi-supervised VAE, ``(n, n_classes)``; rows sum to 1."""
        x, _ = self._rows(X, None)
        return self._out(self._model_for(x).predict_proba(x), X)

    @available_if(lambda self: bool(self.semi_supervised))
    def predict(self, X) -> np.ndarray:
        """The most probable class of each row under q(y|x), ``(n,)`` int64."""
        return self.predict_proba(X).argmax(1).astype(np.int64)

    def score_samples(self, X, y=None, n_importance: int = 1000) -> np.ndarray:
        """Importance-sampled log p(x) per row in nats (higher is more typical).

        ``-score_samples(X)`` is an outlier score. Each row's samples come from a stream seeded
        with ``random_state`` (0 when None) and the row itself, so the same call gives the same
        numbers, and a row's score does not depend on the other rows.

        Parameters
        ----------
        X : array-like of shape (n, d) or (n, C, H, W)
        y : array-like of shape (n,), optional
            Labels, for a conditional model (log p(x|y)).
        n_importance : int
            Importance samples per row (Burda et al. 2015); more is tighter and slower.
        """
        x, labels = self._rows(X, y)
        require(self.config_, "density", "score_samples")
        x = x.float()  # importance sampling runs the model in its own precision
        seed = self.random_state if isinstance(self.random_state, (int, np.integer)) else 0
        g = torch.Generator(self.model_.device).manual_seed(int(seed))
        return log_likelihood(self.model_, x, int(n_importance), generator=g, y=labels).numpy()

    def score(self, X, y=None, n_importance: int = 1000) -> float:
        """Mean log p(x) per row in nats, as scikit-learn's density estimators report (log p(x|y)
        for a conditional model)."""
        return float(self.score_samples(X, y, n_importance).mean())

    # -- persistence -----------------------------------------------------------------------
    def save(self, path: str | Path, overwrite: bool = False) -> None:
        """Write ``config.json`` and ``model.safetensors`` to the directory ``path``.

        An existing run there is refused unless ``overwrite`` (then it is replaced whole, never
        mixed with the new model).
        """
        check_is_fitted(self, "model_")
        rd = RunDir(path)
        with rd.lock():
            rd.save(self.config_, self.data_shape_, self.model_, overwrite=overwrite)
            for fitted in self.samplers_.values():
                save_sampler(rd.path, fitted)

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> "VAE":
        """A fitted estimator from a directory written by :meth:`save` or ``vaekit train``."""
        model, cfg = pipeline.load_run(path, device)
        flat = cfg.flat()
        params = {PARAM_OF_FIELD.get(n, n): flat[n] for n, _, _ in iter_options("estimator")}
        est = cls(**{**params, "device": device})
        est._set_fitted(model, cfg)
        est._run_path = Path(path)  # where sample(sampler=...) finds or stores fitted samplers
        return est

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        tags.input_tags.allow_nan = self.likelihood == "table"  # a table's missing cells
        tags.input_tags.sparse = True  # made dense rows (a one-hot ColumnTransformer output)
        tags.target_tags.required = False
        return tags


def parameter_docs() -> str:
    """The numpydoc lines of the parameters that are configuration fields."""
    lines = []
    for name, f, kind in iter_options("estimator"):
        if name == "seed":
            continue
        kind_name = {tuple: "tuple of int"}.get(kind, kind.__name__)
        if f.metadata["auto"] and name not in ("device", "precision"):
            lines.append(f"{name} : {kind_name} or 'auto', default='auto'\n        {f.metadata['help']}. "
                         f"'auto': chosen from the data at fit (the CLI's default {f.default!r} "
                         "where the data needs nothing else).")
            continue
        default = ESTIMATOR_DEFAULTS.get(name, f.default)
        lines.append(f"{name} : {kind_name}, default={default!r}\n        {f.metadata['help']}.")
    return "\n    ".join(lines)


VAE.__doc__ = VAE.__doc__.replace("{parameters}", parameter_docs())
