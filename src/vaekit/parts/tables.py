"""p(x|z) for a table of mixed column types with missing cells (one head per column).

Each column of the encoded layout (:mod:`vaekit.data.schema`: values for numeric columns,
level indices for levelled ones, NaN where missing) gets its own family, and the log-likelihood
of a row is the sum over its OBSERVED cells of the per-column log-probabilities: masses for
count, binary and categorical columns, densities in the column's own units for continuous and
positive ones (HI-VAE, Nazabal et al. 2020; the missing-cell bound of MIWAE, Mattei & Frellsen
2019, which assumes cells are missing at random). Decoder outputs are standardized by the
schema's per-column ``loc`` and ``scale`` so that a decoder output near 0 means a typical value.

Heads and their decoder outputs (``raw``), per column:

==============  =======  ===============================================================
kind            outputs  distribution
==============  =======  ===============================================================
continuous      2        Normal(loc + scale*raw0, scale*sqrt(exp(raw1) + min_var))
positive        2        log x ~ that Normal on the log scale; density includes -log x
count           2        negative binomial, mean exp(raw0)*(loc + 1), log r = raw1
binary          1        Bernoulli, logit raw0
categorical     K        Categorical, logits raw (K levels); ordinal the same for now
==============  =======  ===============================================================
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch.distributions import Distribution

from .distributions import full_precision
from vaekit.errors import ConfigError, DataError
from .likelihoods import LIKELIHOODS, Likelihood

OUTPUTS = {"continuous": 2, "positive": 2, "count": 2, "binary": 1}  # levelled: one per level
LOG_R_MIN, LOG_R_MAX = -10.0, 12.0  # NB shape r in [4.5e-5, 1.6e5]: past that it is Poisson


class ColumnSpec(Protocol):
    """What the likelihood reads from a column of a schema (:class:`vaekit.data.schema.Column`)."""

    name: str
    kind: str
    levels: tuple
    loc: float
    scale: float


# ---- per-column log-probabilities (elementwise, broadcasting) ---------------------------------

def normal_log_prob(x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log N(x; loc, scale)."""
    return -0.5 * ((x - loc) / scale) ** 2 - torch.log(scale) - 0.5 * math.log(2 * math.pi)


def lognormal_log_prob(x: torch.Tensor, mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """log density of x > 0 with log x ~ N(mu, sigma): the Gaussian on log x minus log x (Jacobian)."""
    log_x = torch.log(x)
    return normal_log_prob(log_x, mu, sigma) - log_x


def negative_binomial_log_prob(x: torch.Tensor, log_mean: torch.Tensor,
                               log_r: torch.Tensor) -> torch.Tensor:
    """log P(x) of a negative binomial with mean m and shape r (variance m + m^2 / r).

    ``lgamma(x+r) - lgamma(r) - lgamma(x+1) + r log(r/(r+m)) + x log(m/(r+m))``; scipy's
    ``nbinom(n=r, p=r/(r+m))``.
    """
    r = torch.exp(log_r)
    log_total = torch.logaddexp(log_r, log_mean)  # log(r + m)
    return (torch.lgamma(x + r) - torch.lgamma(r) - torch.lgamma(x + 1)
            + r * (log_r - log_total) + x * (log_mean - log_total))


def bernoulli_log_prob(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log P(x) for x in {0, 1}: ``x*l - softplus(l)``, stable for any logit."""
    return x * logits - F.softplus(logits)


def categorical_log_prob(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log P(x) of level index x under ``logits`` ``(..., K)``: log_softmax gathered at x."""
    log_p = F.log_softmax(logits, dim=-1)
    idx = x.long().unsqueeze(-1).expand(*log_p.shape[:-1], 1)
    return log_p.gather(-1, idx).squeeze(-1)


def sample_gamma(shape: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Gamma(shape, 1) draws with ``generator`` (Marsaglia & Tsang 2000, boosted for shape < 1)."""
    boost = shape < 1
    a = torch.where(boost, shape + 1, shape)
    d = a - 1.0 / 3.0
    c = 1.0 / torch.sqrt(9.0 * d)
    out = torch.full_like(a, float("nan"))
    todo = torch.ones_like(a, dtype=torch.bool)
    while bool(todo.any()):  # each round accepts > 95% of what is left
        n = torch.randn(a.shape, generator=generator, dtype=a.dtype, device=a.device)
        u = torch.rand(a.shape, generator=generator, dtype=a.dtype, device=a.device)
        v = (1 + c * n) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * n ** 2 + d - d * v + d * torch.log(v.clamp(min=1e-300)))
        take = todo & ok
        out = torch.where(take, d * v, out)
        todo = todo & ~ok
    u = torch.rand(a.shape, generator=generator, dtype=a.dtype, device=a.device)
    return torch.where(boost, out * u ** (1.0 / shape), out)


# ---- the distribution over one row ---------------------------------------------------------

class TableDistribution(Distribution):
    """Independent per-column families over one encoded row ``(width,)``; NaN cells are missing.

    Parameters
    ----------
    heads : dict
        Per kind of numeric head, ``(columns, p0, p1)``: the data column indices and the
        transformed parameters ``(*batch, n_columns)`` (see the module table).
    levelled : list
        ``(column, logits (*batch, K))`` for each binary (K = 1, one logit) and categorical column.
    batch_shape : torch.Size
    width : int
    """

    arg_constraints: ClassVar[dict] = {}

    def __init__(self, heads: dict, levelled: list, batch_shape: torch.Size, width: int) -> None:
        self.heads, self.levelled, self.width = heads, levelled, width
        super().__init__(batch_shape, torch.Size([width]), validate_args=False)

    def log_prob_cells(self, value: torch.Tensor) -> torch.Tensor:
        """Per-cell log-probabilities ``(*batch, width)``, 0 at missing (NaN) cells.

        ``value`` ``(*b, width)`` broadcasts against the batch, e.g. data ``(batch, width)``
        against parameters ``(k, batch, ...)``.
        """
        dtype = self._dtype()
        value = value.to(dtype)
        shape = torch.broadcast_shapes(value.shape[:-1], self.batch_shape)
        out = value.new_zeros((*shape, self.width))
        for kind, (cols, p0, p1) in self.heads.items():
            x = value[..., cols]
            seen = ~torch.isnan(x)
            # a safe stand-in at missing cells keeps the discarded branch's gradient finite
            x = torch.where(seen, x, torch.ones_like(x))
            if kind == "continuous":
                lp = normal_log_prob(x, p0, p1)
            elif kind == "positive":
                lp = lognormal_log_prob(x, p0, p1)
            else:
                lp = negative_binomial_log_prob(x, p0, p1)
            out[..., cols] = torch.where(seen, lp, torch.zeros_like(lp)).expand(*shape, len(cols))
        for col, logits in self.levelled:
            x = value[..., col]
            seen = ~torch.isnan(x)
            x = torch.where(seen, x, torch.zeros_like(x))
            if logits.shape[-1] == 1:
                lp = bernoulli_log_prob(x, logits[..., 0])
            else:
                lp = categorical_log_prob(x.expand(shape), logits.expand(*shape, logits.shape[-1]))
            out[..., col] = torch.where(seen, lp, torch.zeros_like(lp)).expand(shape)
        return out

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log p(observed cells of each row): the sum over non-NaN cells, ``(*batch,)``."""
        return self.log_prob_cells(value).sum(-1)

    def _dtype(self) -> torch.dtype:
        for _, p0, _ in self.heads.values():
            return p0.dtype
        return self.levelled[0][1].dtype

    def _new(self, sample_shape=()) -> torch.Tensor:
        return torch.empty((*sample_shape, *self.batch_shape, self.width), dtype=self._dtype(),
                           device=self._device())

    def _device(self) -> torch.device:
        for _, p0, _ in self.heads.values():
            return p0.device
        return self.levelled[0][1].device

    @property
    def mean(self) -> torch.Tensor:
        """What reconstructions show, ``(*batch, width)`` in the encoded layout: the mean of
        continuous, positive (log-normal mean) and count columns, and the most probable level
        of binary and categorical columns."""
        out = self._new()
        for kind, (cols, p0, p1) in self.heads.items():
            if kind == "continuous":
                out[..., cols] = p0
            elif kind == "positive":
                out[..., cols] = torch.exp(p0 + 0.5 * p1 ** 2)
            else:
                out[..., cols] = torch.exp(p0)
        for col, logits in self.levelled:
            if logits.shape[-1] == 1:
                out[..., col] = (logits[..., 0] > 0).to(out.dtype)
            else:
                out[..., col] = logits.argmax(-1).to(out.dtype)
        return out

    def weighted_fill(self, weights: torch.Tensor) -> torch.Tensor:
        """Each cell's value under the mixture ``sum_k w_k p(x|z_k)``, ``(*batch[1:], width)``.

        ``weights`` ``(k, *batch[1:])`` sum to 1 over the first (sample) dimension of this
        distribution's batch. Numeric columns get the mixture's mean ``sum_k w_k E[x|z_k]``;
        binary and categorical columns the level with the largest ``sum_k w_k p(level|z_k)``
        (MIWAE's single imputation, Mattei & Frellsen 2019, sec. 3).
        """
        w = weights.to(self._dtype()).unsqueeze(-1)  # (k, b, 1)
        mean = self.mean
        out = mean.new_zeros(mean.shape[1:])
        for cols, _, _ in self.heads.values():
            out[..., cols] = (w * mean[..., cols]).sum(0)
        for col, logits in self.levelled:
            if logits.shape[-1] == 1:
                p = (w[..., 0] * torch.sigmoid(logits[..., 0])).sum(0)
                out[..., col] = (p > 0.5).to(out.dtype)
            else:
                p = (w * torch.softmax(logits, -1)).sum(0)
                out[..., col] = p.argmax(-1).to(out.dtype)
        return out

    def sample(self, sample_shape=(), generator: torch.Generator | None = None) -> torch.Tensor:
        """Draws from p(x|z) in the encoded layout, ``(*sample_shape, *batch, width)``."""
        sample_shape = torch.Size(sample_shape)
        with torch.no_grad():
            out = self._new(sample_shape)
            shape = (*sample_shape, *self.batch_shape)
            for kind, (cols, p0, p1) in self.heads.items():
                p0, p1 = p0.expand(*shape, len(cols)), p1.expand(*shape, len(cols))
                if kind in ("continuous", "positive"):
                    y = p0 + p1 * torch.randn(p0.shape, generator=generator, dtype=p0.dtype,
                                              device=p0.device)
                    out[..., cols] = y if kind == "continuous" else torch.exp(y)
                else:  # gamma-Poisson mixture: rate ~ Gamma(r, m / r)
                    r = torch.exp(p1)
                    rate = sample_gamma(r, generator) * torch.exp(p0) / r
                    out[..., cols] = torch.poisson(rate, generator=generator)
            for col, logits in self.levelled:
                logits = logits.expand(*shape, logits.shape[-1])
                u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype,
                               device=logits.device)
                if logits.shape[-1] == 1:
                    out[..., col] = (u[..., 0] < torch.sigmoid(logits[..., 0])).to(out.dtype)
                else:  # Gumbel-max
                    gumbel = -torch.log(-torch.log(u.clamp(1e-12, 1 - 1e-12)))
                    out[..., col] = (logits + gumbel).argmax(-1).to(out.dtype)
            return out


@LIKELIHOODS.register("table")
class TableLikelihood(Likelihood):
    """One likelihood over a row of a table, one family per column, from a schema.

    The decoder's output for one row is ``num_params`` numbers, the columns' blocks in schema
    order (see the module table); ``params_per_dim`` is ``ceil(num_params / width)`` so that a
    decoder sized ``params_per_dim * width`` (the model's rule) fits, and the trailing extra
    outputs are ignored.

    The encoder cannot read level indices and NaN, so :meth:`features` gives it, per row:
    each numeric column standardized by the schema (positive columns on the log scale), each
    binary column as 0/1, each categorical or ordinal column one-hot, all 0 at missing cells
    (zero imputation, MIWAE, Mattei & Frellsen 2019), then one missing-cell indicator per column.

    Parameters
    ----------
    columns : sequence of Column
        The schema's columns (:attr:`vaekit.data.schema.Schema.columns`, or anything with
        ``name``, ``kind``, ``levels``, ``loc``, ``scale``).
    min_obs_var : float
        Floor on the variance of continuous and positive heads, in standardized units
        (Shu 2018, "Lower bounding the generative model variance"), so densities stay bounded.
    cell_dropout : float
        Share of observed cells hidden from the encoder in training mode (:meth:`features`).
    """

    real_valued = False  # the table's own units: never standardized from outside

    def __init__(self, columns: Sequence[ColumnSpec], min_obs_var: float = 1e-6,
                 cell_dropout: float = 0.0) -> None:
        columns = list(getattr(columns, "columns", columns))  # a Schema or its columns
        if not columns:
            raise ConfigError("a table likelihood needs at least one column")
        super().__init__((len(columns),))
        self.columns = columns
        self.min_obs_var = min_obs_var
        self.cell_dropout = cell_dropout
        self.width = len(columns)
        self.numeric: dict[str, tuple[list[int], list[int]]] = {}  # kind -> (columns, first output)
        self.levelled: list[tuple[int, int, int]] = []  # (column, first output, outputs)
        offset = 0
        for j, c in enumerate(columns):
            if c.kind in OUTPUTS and c.kind != "binary":
                cols, starts = self.numeric.setdefault(c.kind, ([], []))
                cols.append(j)
                starts.append(offset)
                offset += OUTPUTS[c.kind]
            elif c.kind in ("binary", "categorical", "ordinal"):
                k = 1 if c.kind == "binary" else len(c.levels)
                if k < 1 or (c.kind != "binary" and k < 2):
                    raise ConfigError(f"column '{c.name}': a {c.kind} column needs at least two levels")
                self.levelled.append((j, offset, k))
                offset += k
            else:
                raise ConfigError(f"column '{c.name}': no likelihood for type '{c.kind}'")
        self.num_params = offset
        self.params_per_dim = -(-offset // self.width)
        for kind, (cols, _) in self.numeric.items():
            loc = torch.tensor([float(columns[j].loc) for j in cols], dtype=torch.float64)
            scale = torch.tensor([float(columns[j].scale) for j in cols], dtype=torch.float64)
            self.register_buffer(f"_{kind}_loc", loc, persistent=False)  # the schema stores them
            self.register_buffer(f"_{kind}_scale", scale, persistent=False)

    @classmethod
    def from_config(cls, data_shape, config) -> "TableLikelihood":
        """From ``config.schema``, the column schema's JSON (:class:`vaekit.data.schema.Schema`)."""
        from vaekit.data.schema import Schema  # here: pandas only for models of tables

        if not getattr(config, "schema", ""):
            raise ConfigError("the table likelihood needs the table's column schema: train on a "
                              ".csv with a header row or a .parquet file")
        schema = Schema.from_json(config.schema, "the run's column schema")
        if tuple(data_shape) != (schema.width,):
            raise ConfigError(f"the column schema has {schema.width} columns but the data have "
                              f"examples of shape {tuple(data_shape)}")
        lik = cls(schema.columns, min_obs_var=config.min_obs_var,
                  cell_dropout=getattr(config, "cell_dropout", 0.0))
        lik.schema = schema
        return lik

    def feature_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """``(n_features,)``: see :meth:`features`."""
        return (self.num_features,)

    @property
    def num_features(self) -> int:
        levels = sum(k for _, _, k in self.levelled)  # a binary column is one 0/1 number
        return sum(len(cols) for cols, _ in self.numeric.values()) + levels + self.width

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Encoded rows ``(b, width)`` (NaN missing) -> the encoder's input ``(b, n_features)``:
        standardized numbers (log x for positive columns), 0/1 and one-hot levels, 0 where
        missing, then the ``width`` missing-cell indicators (1 = missing).

        In training mode with ``cell_dropout`` p > 0, each observed cell is hidden (as if
        missing) with probability p, drawn from the global torch generator as ``nn.Dropout``
        does: the encoder learns incomplete rows, and the ELBO stays a lower bound because it
        holds for any q(z|x).
        """
        if self.training and self.cell_dropout > 0:
            hide = torch.rand(x.shape, device=x.device) < self.cell_dropout
            x = torch.where(hide, torch.full_like(x, float("nan")), x)
        seen = ~torch.isnan(x)
        safe = torch.where(seen, x, torch.ones_like(x))  # log(1) = 0: no NaN in any branch
        parts = []
        for kind, (cols, _) in self.numeric.items():
            v = safe[:, cols]
            if kind == "positive":
                v = torch.log(v.clamp(min=torch.finfo(v.dtype).tiny))
            loc = getattr(self, f"_{kind}_loc").to(x.dtype)
            scale = getattr(self, f"_{kind}_scale").to(x.dtype)
            parts.append(torch.where(seen[:, cols], (v - loc) / scale, torch.zeros_like(v)))
        for j, _, k in self.levelled:
            code = torch.where(seen[:, j], safe[:, j], torch.zeros_like(safe[:, j]))
            if k == 1:  # binary: the level index is the value
                parts.append(code.unsqueeze(-1))
            else:
                hot = F.one_hot(code.long().clamp(0, k - 1), k).to(x.dtype)
                parts.append(hot * seen[:, j:j + 1].to(x.dtype))
        parts.append((~seen).to(x.dtype))
        return torch.cat(parts, -1)

    def forward(self, params: torch.Tensor) -> TableDistribution:
        """``params`` ``(..., num_params)`` or ``(..., params_per_dim * width)`` -> a distribution
        over rows ``(..., width)``."""
        params = full_precision(params)
        if params.shape[-1] not in (self.num_params, self.params_per_dim * self.width):
            raise ConfigError(f"the table likelihood needs {self.num_params} decoder outputs per "
                              f"row, got {params.shape[-1]}")
        heads = {}
        for kind, (cols, starts) in self.numeric.items():
            first = torch.tensor(starts, device=params.device)
            raw0, raw1 = params[..., first], params[..., first + 1]
            loc = getattr(self, f"_{kind}_loc").to(params.dtype)
            scale = getattr(self, f"_{kind}_scale").to(params.dtype)
            if kind == "count":
                # the mean is relative to the column's (loc + 1: no log 0 for an all-zero column)
                p0 = raw0 + torch.log(loc + 1.0)
                p1 = raw1.clamp(LOG_R_MIN, LOG_R_MAX)
            else:
                p0 = loc + scale * raw0
                p1 = scale * torch.sqrt(torch.exp(raw1) + self.min_obs_var)
            heads[kind] = (cols, p0, p1)
        levelled = [(j, params[..., s:s + k]) for j, s, k in self.levelled]
        return TableDistribution(heads, levelled, params.shape[:-1], self.width)

    def check_data(self, x: torch.Tensor, what: str) -> None:
        """DataError naming the column unless every observed cell lies in its column's support."""
        if x.ndim != 2 or x.shape[1] != self.width:
            raise DataError(f"{what}: the table likelihood needs rows of {self.width} encoded "
                            f"cells, got shape {tuple(x.shape)}")
        for j, c in enumerate(self.columns):
            v = x[:, j]
            v = v[~torch.isnan(v)]
            if c.kind == "continuous":
                bad = ~torch.isfinite(v)
            elif c.kind == "positive":
                bad = ~torch.isfinite(v) | (v <= 0)
            elif c.kind == "count":
                bad = ~torch.isfinite(v) | (v < 0) | (v != torch.round(v))
            else:
                k = len(c.levels)
                bad = (v < 0) | (v >= k) | (v != torch.round(v))
            if bool(bad.any()):
                raise DataError(f"{what}: column '{c.name}' ({c.kind}) holds "
                                f"{float(v[bad][0]):g}, outside its support; encode the table "
                                "with its schema")

    def discrete(self, x: torch.Tensor) -> bool:
        """True when every column is discrete (count, binary, categorical): log p is a mass."""
        return all(c.kind not in ("continuous", "positive") for c in self.columns)
