"""The estimator on tables: a pandas DataFrame is fitted with its column schema, its rows are
encoded through it, and its missing cells imputed. A mixin of :class:`vaekit.estimator.model.VAE`,
which supplies the fitted model, configuration and schema."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from vaekit import pipeline
from vaekit.config.settings import RunConfig
from vaekit.data.base import Dataset
from vaekit.data.files import split_indices
from vaekit.errors import DataError


class TableMixin:
    """``impute`` and the table paths of ``fit`` and the row checks."""

    def _is_table(self, X) -> bool:
        """A pandas DataFrame is a table of typed columns when the likelihood is ``table`` or
        left to vaekit, as a CSV with a header is for ``vaekit train``; arrays, and DataFrames
        with another likelihood given, are arrays of numbers."""
        import pandas as pd

        return isinstance(X, pd.DataFrame) and self.likelihood in ("auto", "table")

    def _fit_table(self, X, cfg: RunConfig, given: set[str]) -> "TableMixin":
        from vaekit.data.inference import infer_schema

        overrides = [c for c in str(self.column).split(",") if c.strip()]
        schema = infer_schema(X, overrides, what="X")
        x = torch.from_numpy(schema.encode(X, "X").astype(np.float32))  # NaN where missing
        train, test = (torch.from_numpy(i) for i in split_indices(len(x), cfg.data.test_fraction, "X"))
        data = Dataset("X", x[train], x[test], schema=schema)
        log = print if self.verbose else (lambda s: None)
        res = pipeline.train(cfg, data, given=given, log=log, progress=False,
                             epoch_log=self.verbose)
        self.history_ = res.history
        self._set_fitted(res.model, res.config)
        self.feature_names_in_ = np.array([str(c) for c in X.columns], dtype=object)
        self.n_features_in_ = X.shape[1]
        return self

    def _table_rows(self, X) -> torch.Tensor:
        import pandas as pd

        if not isinstance(X, pd.DataFrame):
            raise DataError(f"this VAE models a table: pass a pandas DataFrame with the columns "
                            f"{', '.join(self.schema_.names)}")
        x = torch.from_numpy(self.schema_.encode(X, "X").astype(np.float32)).to(self.model_.device)
        pipeline.check_rows(self.model_, x, None, "X")
        return x

    def impute(self, X, n_importance: int = 1000, draws: int | None = None):
        """``X`` (a DataFrame with the fitted columns) with its missing cells filled.

        Single imputation (``draws=None``): each missing numeric cell is its importance-weighted
        conditional mean, each missing categorical cell its most probable level (MIWAE, Mattei &
        Frellsen 2019, sec. 3; cells assumed missing at random). ``draws=M``: a list of M
        completed DataFrames drawn from p(missing | observed) by sampling importance resampling.
        Observed cells and columns the schema leaves out are returned as they were. Seeded with
        ``random_state`` (0 when None).

        Parameters
        ----------
        X : pandas.DataFrame
        n_importance : int
            Importance samples per row; more gives steadier imputations.
        draws : int, optional
            Multiple imputations to draw.
        """
        check_is_fitted(self, "model_")
        if self.schema_ is None:
            raise DataError("impute fills a table's missing cells: fit this VAE on a DataFrame")
        seed = self.random_state if isinstance(self.random_state, (int, np.integer)) else 0
        res = pipeline.impute_table(self.model_, X, k=int(n_importance), draws=int(draws or 0),
                                    seed=int(seed), what="X")
        return res.draws if draws else res.table
