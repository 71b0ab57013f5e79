"""The ``marginals`` sampler of a table: the model's draws, each continuous column mapped onto the
training data's own distribution of that column.

A VAE's draws from p(x|z) carry the model's dependence between columns, but each column's
marginal is only as good as the model: on tables of a few hundred rows its column shapes
(SDMetrics' 1 - KS) trail a Gaussian copula's, whose marginals are the data's own (docs/tables.md).
This sampler keeps the model's dependence and takes the data's marginals (Sklar 1959): each
continuous or positive column of a draw goes through the monotone map
``F_data^-1(F_model(v))`` (quantile mapping, Panofsky & Brier 1968), with ``F_model`` the
column's marginal under the model (estimated from :data:`MODEL_DRAWS` seeded draws when the
sampler is fitted) and ``F_data`` the training rows' (observed cells only), both stored as
:data:`LEVELS` quantiles and interpolated linearly. Ranks within a column, and so the model's
rank correlations, are unchanged; values stay inside the training range. Binary, categorical,
ordinal and count columns are left as drawn.

Codes come from the ex-post mixture on the training codes (Ghosh et al. 2020), which lifted
the pair-trend scores over the prior's codes in the side experiments of docs/tables.md.

The rows are then not draws from the model's p(x) (its log-likelihood does not describe them),
and their marginals are the training data's: use them for synthetic data, not as the model's
samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from vaekit.errors import RunDirError
from vaekit.runs.store import check_tensors

from .samplers import SAMPLERS, ExPostSampler, Sampler

LEVELS = 1001  # quantile levels 0, 0.001, ..., 1 of each mapped column
MODEL_DRAWS = 20_000  # draws of the model estimating its marginals (at least 20 per training row)
MAPPED = ("continuous", "positive")  # column kinds whose marginal is mapped
FIT_SEED_OFFSET = 7_000_003  # the model draws never repeat another stream


def quantile_map(v: torch.Tensor, model_q: torch.Tensor, data_q: torch.Tensor) -> torch.Tensor:
    """``F_data^-1(F_model(v))`` per column: ``v`` ``(n, c)``, the quantile tables ``(c, LEVELS)``
    at levels ``linspace(0, 1, LEVELS)``; linear between quantiles, clamped at the ends; NaN
    (a missing cell) stays NaN."""
    levels = np.linspace(0.0, 1.0, model_q.shape[1])
    out = np.empty(v.shape, dtype=np.float64)
    a = v.detach().cpu().double().numpy()
    mq, dq = model_q.double().numpy(), data_q.double().numpy()
    for j in range(a.shape[1]):
        u = _cdf(a[:, j], mq[j], levels)
        out[:, j] = np.where(np.isnan(a[:, j]), np.nan, np.interp(u, levels, dq[j]))  # missing stays missing
    return torch.from_numpy(out).to(v.dtype)


def _cdf(values: np.ndarray, quantiles: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """The piecewise-linear CDF through (``quantiles``, ``levels``), 0 below and 1 above them;
    a value equal to several quantiles (a point mass) gets the middle of their levels, so
    equal draws map to one value."""
    left = np.searchsorted(quantiles, values, side="left")
    right = np.searchsorted(quantiles, values, side="right")
    last = len(quantiles) - 1
    lo, hi = np.clip(left - 1, 0, last), np.clip(left, 0, last)
    span = quantiles[hi] - quantiles[lo]
    frac = np.where(span > 0, (values - quantiles[lo]) / np.where(span > 0, span, 1.0), 0.0)
    u = levels[lo] + frac * (levels[hi] - levels[lo])
    u = np.where(left == 0, 0.0, np.where(left > last, 1.0, u))
    hit = right > left  # equal to quantiles left .. right - 1
    u[hit] = (levels[left[hit]] + levels[right[hit] - 1]) / 2
    return u


@SAMPLERS.register("marginals")
class MarginalSampler(Sampler):
    """Codes from the ex-post mixture (:class:`ExPostSampler`, fitted with it); each draw's
    continuous columns mapped onto the training data's marginals."""

    name = "marginals"
    needs = "table-marginals"
    wants_rows = draws_only = True

    def __init__(self, model, codes_from: ExPostSampler, columns: torch.Tensor, model_q: torch.Tensor,
                 data_q: torch.Tensor, record: dict[str, Any] | None = None) -> None:
        super().__init__(model, record)
        self.codes_from = codes_from
        self.columns, self.model_q, self.data_q = columns, model_q, data_q

    def codes(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.codes_from.codes(n, generator)

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """Draws ``(n, width)`` with the mapped columns on the data's marginals."""
        if not len(self.columns):
            return x
        cols = self.columns.to(device=x.device, dtype=torch.long)
        out = x.clone()
        out[:, cols] = quantile_map(x[:, cols], self.model_q, self.data_q).to(x.device)
        return out

    def tensors(self) -> dict[str, torch.Tensor]:
        inner = {f"codes.{k}": v for k, v in self.codes_from.tensors().items()}
        return {**inner, "columns": self.columns, "model_quantiles": self.model_q,
                "data_quantiles": self.data_q}

    def describe(self) -> str:
        return (f"{self.codes_from.describe()}, {len(self.columns)} continuous column(s) mapped "
                "onto the training data's marginals")

    @classmethod
    def fit(cls, model, codes, seed, log, train, rows: torch.Tensor | None = None) -> "MarginalSampler":
        schema = getattr(model.likelihood, "schema", None)
        if schema is None or rows is None:  # the capability table refuses this first
            raise RunDirError("the marginals sampler needs a model of a table and its training rows")
        codes_from = ExPostSampler.fit(model, codes, seed, log, train)
        columns = [j for j, c in enumerate(schema.columns) if c.kind in MAPPED]
        levels = np.linspace(0.0, 1.0, LEVELS)
        x = rows.detach().cpu().double().numpy()
        data_q = np.zeros((len(columns), LEVELS))
        for k, j in enumerate(columns):
            seen = x[~np.isnan(x[:, j]), j]
            data_q[k] = np.quantile(seen, levels) if len(seen) else 0.0
        n = max(MODEL_DRAWS, 20 * len(x))
        g = torch.Generator(model.device).manual_seed(seed + FIT_SEED_OFFSET)
        drawn = []
        with torch.no_grad():
            for i in range(0, n, 5000):
                px = model.decode(codes_from.codes(min(5000, n - i), g))
                drawn.append(px.sample(generator=g)[:, columns].double().cpu())
        d = torch.cat(drawn).numpy()
        model_q = np.stack([np.quantile(d[:, k], levels) for k in range(len(columns))]) \
            if columns else np.zeros((0, LEVELS))
        names = [schema.columns[j].name for j in columns]
        log(f"  marginals: {len(columns)} continuous column(s) mapped onto the data's marginals "
            f"({', '.join(names[:4])}{', ...' if len(names) > 4 else ''}); the model's from "
            f"{n:,} draws")
        details = {"codes": codes_from.record["details"], "columns": names, "model_draws": n,
                   "levels": LEVELS}
        return cls(model, codes_from, torch.tensor(columns, dtype=torch.int64),
                   torch.from_numpy(model_q), torch.from_numpy(data_q), {"details": details})

    @classmethod
    def rebuild(cls, model, details, tensors, where) -> "MarginalSampler":
        schema = getattr(model.likelihood, "schema", None)
        if schema is None:
            raise RunDirError(f"{where}: a marginals sampler belongs to a model of a table")
        if not isinstance(details.get("codes"), dict):
            raise RunDirError(f"{where}: the record does not describe its codes")
        codes_from = ExPostSampler.rebuild(
            model, details["codes"], {k[6:]: v for k, v in tensors.items() if k.startswith("codes.")},
            where)
        columns = [j for j, c in enumerate(schema.columns) if c.kind in MAPPED]
        if details.get("columns") != [schema.columns[j].name for j in columns] \
                or details.get("levels") != LEVELS:
            raise RunDirError(f"{where}: its columns do not match the model's schema")
        c = len(columns)
        own = {k: v for k, v in tensors.items() if not k.startswith("codes.")}
        check_tensors(own, {"columns": torch.zeros(c, dtype=torch.int64),
                            "model_quantiles": torch.zeros(c, LEVELS, dtype=torch.float64),
                            "data_quantiles": torch.zeros(c, LEVELS, dtype=torch.float64)}, where)
        if own["columns"].tolist() != columns:
            raise RunDirError(f"{where}: its columns do not match the model's schema")
        for key in ("model_quantiles", "data_quantiles"):
            q = own[key]
            if not bool(torch.isfinite(q).all()) or bool((q.diff(dim=1) < 0).any()):
                raise RunDirError(f"{where}: {key} are not finite and non-decreasing")
        return cls(model, codes_from, own["columns"], own["model_quantiles"], own["data_quantiles"])
