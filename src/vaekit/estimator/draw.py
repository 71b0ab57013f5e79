"""The estimator's generative side: draws from the prior or a fitted sampler of codes, and
morphs between examples. A mixin of :class:`vaekit.estimator.model.VAE`, which supplies the fitted
model (``model_``, ``config_``), the row checks (``_rows``, ``_model_for``, ``_out``) and
``verbose``.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from vaekit import pipeline
from vaekit.models.kinds import require
from vaekit.data.base import as_labels
from vaekit.errors import ConfigError, DataError
from vaekit.sampling.morph import interpolation_ends, morph
from vaekit.sampling.samplers import SAMPLERS


class DrawMixin:
    """``sample``, ``fit_sampler`` and ``interpolate`` of :class:`vaekit.estimator.model.VAE`."""

    @torch.no_grad()
    def interpolate(self, X, y=None, *, from_index: int | None = None, to_index: int | None = None,
                    from_label: int | None = None, to_label: int | None = None, steps: int = 10,
                    spherical: bool = False) -> np.ndarray:
        """Decoder means along the path between two examples' posterior means.

        Parameters
        ----------
        X : array-like of shape (n, d) or (n, C, H, W)
            The rows to choose the ends from.
        y : array-like of shape (n,), optional
            Class labels: to choose by label, and for a conditional model (which decodes the
            path with the first end's label).
        from_index, to_index : int, optional
            The ends as rows of ``X``.
        from_label, to_label : int, optional
            The ends as classes of ``y``: of each, the row whose posterior mean is nearest the
            class's mean posterior mean (:func:`vaekit.sampling.morph.class_representative`).
        steps : int
            Points on the path, ends included.
        spherical : bool
            Spherical instead of linear interpolation (White 2016).

        Returns
        -------
        np.ndarray
            ``(steps, *data_shape)``: the first row decodes the first end's code, the last row
            the second's.
        """
        by_label = from_label is not None or to_label is not None
        if by_label == (from_index is not None or to_index is not None) or None in (
                (from_label, to_label) if by_label else (from_index, to_index)):
            raise ConfigError("give the ends as from_index and to_index, or as from_label and "
                              "to_label")
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ConfigError(f"steps must be a positive number of points, got {steps!r}")
        if by_label and y is None:
            raise DataError("from_label and to_label choose examples by class: pass the labels y")
        x, labels = self._rows(X, y)
        model = self._model_for(x)
        classes = None if y is None else torch.from_numpy(as_labels(y, len(x)))
        ends = interpolation_ends(model, x, labels, classes,
                                  *((from_label, to_label) if by_label else (from_index, to_index)),
                                  by_label, ("from_label", "to_label") if by_label else
                                  ("from_index", "to_index"))
        decoded = morph(model, x[ends], None if labels is None else labels[ends], int(steps),
                        bool(spherical))
        return self._out(decoded[1:-1], X)

    @torch.no_grad()
    def sample(self, n: int = 1, random_state: int | None = None, label: int | None = None,
               sampler: str = "prior", mean: bool = False):
        """Decoder means of ``n`` draws, ``(n, *data_shape)``; of class ``label`` when conditional.

        A VAE of a table returns a pandas DataFrame with the table's columns and types, of
        draws from p(x|z) (each column's own noise), or of decoder means with ``mean=True``.

        ``sampler`` says where the codes come from: ``prior`` (p(z)), or ``expost`` / ``two-stage``
        (a density fitted to the training codes, :mod:`vaekit.sampling.samplers`), ``marginals``
        (a table's draws on the training data's marginals, no ``mean``), fitted by
        :meth:`fit_sampler`, or, for an estimator loaded from a run directory, the run's own
        (fitted and stored there on first use, as ``vaekit sample`` does).
        """
        check_is_fitted(self, "model_")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ConfigError(f"n must be a positive number of samples, got {n!r}")
        fitted = self._sampler(sampler)
        g = torch.Generator(self.model_.device)
        g.manual_seed(int(random_state)) if random_state is not None else g.seed()
        table = getattr(self, "schema_", None) is not None
        try:
            x = pipeline.sample(self.model_, int(n), g, label, fitted, draw=table and not mean)
            return pipeline.table_frame(self.model_, x) if table else x.numpy()
        except ConfigError as e:
            raise DataError(str(e).replace("give label L", "pass label=L").replace(
                "label needs", "label applies to")) from None

    def _sampler(self, name: str):
        """The fitted sampler ``name`` (None for the prior)."""
        if not isinstance(name, str) or name not in SAMPLERS:
            raise ConfigError(f"sampler must be one of {', '.join(SAMPLERS.names())}, got {name!r}")
        if name == "prior":
            return None
        if name not in self.samplers_ and self._run_path is None:  # (a new fit empties samplers_)
            raise DataError(f"the {name} sampler is not fitted: call fit_sampler(X, sampler="
                            f"'{name}') with the training data first")
        if name not in self.samplers_:  # loaded from a run: the run's own, fitted there if need be
            self.samplers_[name] = pipeline.run_sampler(self._run_path, self.model_, self.config_,
                                                        name, log=self._log)
        return self.samplers_[name]

    def _log(self, line: str) -> None:
        if self.verbose:
            print(line)

    def fit_sampler(self, X, y=None, sampler: str = "expost") -> "DrawMixin":
        """Fit a sampler of codes to the codes of ``X`` (the training data); returns self.

        ``expost``: a Gaussian mixture on the codes, its components chosen on a held-out 10%
        (Ghosh et al. 2020); ``two-stage``: a second VAE on the codes (Dai & Wipf 2019);
        ``pixelcnn``: a VQ-VAE's learned prior over its code grid (docs/vqvae.md);
        ``marginals`` (a table): ``expost`` codes, and each continuous column of the draws
        mapped onto its marginal in ``X`` (synthetic data, docs/tables.md). Kept in
        ``samplers_`` and written by :meth:`save`; ``sample(..., sampler=...)`` draws from it.
        ``y``: labels, for a conditional model.
        """
        x, labels = self._rows(X, y)
        if not isinstance(sampler, str) or sampler not in SAMPLERS or sampler == "prior":
            raise ConfigError(f"sampler must be one of {', '.join(SAMPLERS.names()[1:])}, got {sampler!r}")
        require(self.config_, SAMPLERS[sampler].needs, f"fit_sampler(sampler={sampler!r})")
        seed = self.config_.train.seed
        self.samplers_[sampler] = pipeline.fit_sampler(sampler, self.model_, x.float(), labels,
                                                       seed, log=self._log)
        return self
