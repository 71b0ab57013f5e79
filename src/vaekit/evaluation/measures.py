"""Evaluation as pure functions of a model and data.

Scores are rankable: in :func:`importance_sample` each row draws its samples from its own
stream, seeded from the caller's seed and the row's content (its float32 bytes and label), so a
row's log p(x) does not depend on which rows share the call, their order or the batch size.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from typing import Callable

import numpy as np
import torch

from vaekit.errors import ConfigError

MAX_IMPORTANCE = 10**6  # importance samples per row: the CLI's -k bound, for every caller
NOISE_BUDGET = 2**23  # noise numbers held per batch (32 MB float32): bounds k x rows x latent


@torch.no_grad()
def elbo_terms(model, x: torch.Tensor, batch_size: int = 1000, beta: float = 1.0,
               generator: torch.Generator | None = None,
               autocast: contextlib.AbstractContextManager | None = None,
               y: torch.Tensor | None = None, objective: str = "elbo", k: int = 1) -> dict[str, float]:
    """Mean loss (the training objective), reconstruction and KL per example over ``x``, in nats,
    and ``tc``, the mean minibatch total correlation, where the objective estimates one (tcvae;
    its batches are ``batch_size`` rows).

    With the default objective, the negative ELBO from one reparameterized sample per example;
    pass a seeded ``generator`` for a repeatable value, labels ``y`` for a conditional model.
    """
    device = model.device
    sums = torch.zeros(4, dtype=torch.float64, device=device)
    has_tc = False
    was_training = model.training
    model.eval()
    for i in range(0, len(x), batch_size):
        xb = x[i: i + batch_size].to(device, non_blocking=True)
        yb = None if y is None else y[i: i + batch_size].to(device)
        with autocast or contextlib.nullcontext():
            t = model(xb, beta, generator, y=yb, name=objective, k=k)
        tc = t.tc.sum() if t.tc is not None else t.loss.new_zeros(())
        has_tc = t.tc is not None
        sums += torch.stack([t.loss.sum(), t.rec.sum(), t.kl.sum(), tc]).double()
    model.train(was_training)
    loss, rec, kl, tc = (sums / max(len(x), 1)).tolist()
    return {"loss": loss, "rec": rec, "kl": kl} | ({"tc": tc} if has_tc else {})


@torch.no_grad()
def posterior_means(model, x: torch.Tensor, batch_size: int = 1000,
                    y: torch.Tensor | None = None) -> torch.Tensor:
    """E_q[z|x] for every row of ``x``, in order: ``(n, latent_dim)``, float32 (float64 for a
    float64 model)."""
    dtype = torch.float64 if next(model.parameters()).dtype == torch.float64 else torch.float32
    out = [model.encode(x[i: i + batch_size].to(model.device, dtype),
                        None if y is None else y[i: i + batch_size]).mean.to(dtype).cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, model.latent_dim)


def classification_error(model, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000
                         ) -> float | None:
    """Fraction of the labelled rows of ``x`` (``y >= 0``) whose most probable class under the
    model's ``q(y|x)`` is not their label; None without labelled rows."""
    known = y >= 0
    if not bool(known.any()):
        return None
    probs = model.predict_proba(x[known.to(x.device)], batch_size)
    return float((probs.argmax(-1) != y[known].cpu()).double().mean())


def row_seeds(x: torch.Tensor, y: torch.Tensor | None, seed: int) -> list[int]:
    """One 64-bit seed per row: BLAKE2b of the row's float32 bytes and its label, keyed by ``seed``.

    Equal rows (and labels) get equal seeds; ``-0.0`` counts as ``0.0`` and a float64 row as
    its float32 value, so the seed follows the values the model sees.
    """
    key = (int(seed) % 2**64).to_bytes(8, "little")
    rows = x.detach().reshape(len(x), -1).to("cpu", torch.float32).numpy() + np.float32(0.0)
    labels = None if y is None else y.detach().reshape(-1).to("cpu", torch.int64).numpy()
    out = []
    for i, row in enumerate(rows):
        h = hashlib.blake2b(row.tobytes(), digest_size=8, key=key)
        if labels is not None:
            h.update(labels[i].tobytes())
        out.append(int.from_bytes(h.digest(), "little"))
    return out


def row_noise(seeds: list[int], k: int, dim: int, device: torch.device,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard-normal noise ``(b, k, dim)``: row ``j`` from its own generator seeded ``seeds[j]``.

    Each row's ``k * dim`` numbers come from one draw of its own stream, so they do not depend on
    the batch or on how the ``k`` samples are chunked later.
    """
    out = torch.empty(len(seeds), k, dim, device=device, dtype=dtype)
    g = torch.Generator(device)
    for j, s in enumerate(seeds):
        g.manual_seed(s)
        torch.randn(k, dim, generator=g, out=out[j])
    return out


def stream_seed(seed: int | None, generator: torch.Generator | None) -> int:
    """The seed of the per-row streams: ``seed``, else ``generator``'s seed, else a fresh one."""
    if seed is not None:
        return int(seed)
    if generator is not None:
        return int(generator.initial_seed())
    return int(torch.randint(0, 2**62, (), dtype=torch.int64))


@torch.no_grad()
def importance_sample(model, x: torch.Tensor, k: int = 1000, batch_size: int = 100,
                      max_rows: int = 4096, generator: torch.Generator | None = None,
                      progress: Callable[[int], None] | None = None,
                      y: torch.Tensor | None = None, seed: int | None = None,
                      check: bool = True, rowwise: bool | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Importance-sampled log p(x) per example, with the posterior as proposal.

    ``log (1/k) sum_i p(x, z_i) / q(z_i | x)``, ``z_i ~ q(z | x)``: exactly ``k`` samples per
    example, combined with logsumexp (Burda et al. 2015, eq. 8). Examples are taken
    ``batch_size`` at a time and the ``k`` samples in chunks of at most ``max_rows`` decoder rows,
    so memory stays bounded whatever ``k`` is (4096 rows keep a chunk's logits in cache: it
    measured fastest here). Each row's noise comes from its own stream (:func:`row_seeds`), so
    its estimate is the same whatever rows share the call, in whatever order (see ``rowwise``).

    Parameters
    ----------
    model : VAEModel
    x : torch.Tensor
        ``(n, *data_shape)``, in the data's own units (the model applies its preprocessing).
    k : int
        Importance samples per example (k = 1 gives a one-sample ELBO).
    batch_size, max_rows : int
        Examples per encoder batch; decoder rows (samples x examples) per chunk.
    generator : torch.Generator, optional
        Only its seed (``initial_seed()``) is used, when ``seed`` is not given.
    progress : callable, optional
        Called with the number of examples finished after each batch.
    y : torch.Tensor, optional
        Labels, for a conditional model (they also key the rows' streams).
    seed : int, optional
        Seed of the per-row streams; default: the generator's, else a random one.
    check : bool
        Refuse data outside the likelihood's support (DataError) before any work.
    rowwise : bool, optional
        Compute each row alone (default on CPU): matrix-multiply kernels round a row's numbers
        differently for different row counts, so only this makes a row's estimate identical to
        the last bit whatever its batch. On a GPU rows are batched for throughput (their
        streams are still their own: the estimates agree to float rounding).

    Returns
    -------
    log_likelihood : torch.Tensor
        ``(n,)`` float64, in nats: a lower bound on log p(x) in expectation that tightens as
        ``k`` grows.
    expected_log_px : torch.Tensor
        ``(n,)`` float64, the mean of ``log p(x | z_i)`` over the same samples: the
        reconstruction term of the ELBO.
    log_ratio : torch.Tensor
        ``(n,)`` float64, the mean of ``log p(z_i) - log q(z_i | x)``: minus a Monte Carlo
        estimate of the KL term.
    """
    if not 1 <= k <= MAX_IMPORTANCE:
        raise ConfigError(f"the number of importance samples must be from 1 to "
                          f"{MAX_IMPORTANCE:,} per row, got {k:,}")
    if check and len(x) and hasattr(model, "check_data"):
        model.check_data(x, "the data to score")
    first = next(model.parameters())
    device, dtype = first.device, first.dtype
    root = stream_seed(seed, generator)
    batch_size = max(1, min(batch_size, NOISE_BUDGET // (k * model.noise_dim)))
    rowwise = device.type == "cpu" if rowwise is None else rowwise
    was_training = model.training
    model.eval()
    parts = []
    pz = model.prior()  # once: the vamp prior encodes its pseudo-inputs to build it
    for i in range(0, len(x), batch_size):
        xb = x[i: i + batch_size].to(device, non_blocking=True)
        yb = None if y is None else y[i: i + batch_size].to(device)
        noise = row_noise(row_seeds(xb, yb, root), k, model.noise_dim, device, dtype)  # (b, k, L)
        if rowwise:  # each row alone: the kernels see the same shapes whatever the batch
            parts += [row_terms(model, xb[j: j + 1], None if yb is None else yb[j: j + 1],
                                noise[j].unsqueeze(1), max_rows, pz) for j in range(len(xb))]
        else:
            parts.append(row_terms(model, xb, yb, noise.transpose(0, 1).contiguous(),
                                   max(1, max_rows // len(xb)), pz))
        if progress is not None:
            progress(len(xb))
    model.train(was_training)
    if not parts:
        empty = torch.zeros(0, dtype=torch.float64)
        return empty, empty, empty
    ll, rec, ratio = (torch.cat(t) for t in zip(*parts))
    return ll, rec, ratio


def row_terms(model, xb: torch.Tensor, yb: torch.Tensor | None, noise: torch.Tensor, chunk: int,
              pz) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """log p(x) estimate, mean log p(x|z) and mean log ratio of rows ``xb`` from their noise
    ``(k, b, L)``, the samples taken ``chunk`` at a time; each ``(b,)`` float64 on the CPU."""
    k = len(noise)
    state = model.infer(xb, yb)  # the encoder runs once per batch, not per chunk
    log_px, log_ratio = [], []
    for s in range(0, k, chunk):
        t = model.terms(xb, yb, min(chunk, k - s), noise=noise[s: s + chunk], weights=True,
                        state=state, prior=pz)
        log_px.append(t.log_px)
        log_ratio.append(t.log_ratio)
    log_px, log_ratio = torch.cat(log_px).double(), torch.cat(log_ratio).double()  # (k, b)
    ll = torch.logsumexp(log_px + log_ratio, 0) - math.log(k)
    return ll.cpu(), log_px.mean(0).cpu(), log_ratio.mean(0).cpu()


def log_likelihood(model, x: torch.Tensor, k: int = 1000, **kw) -> torch.Tensor:
    """Importance-sampled log p(x) per example; see :func:`importance_sample`."""
    return importance_sample(model, x, k, **kw)[0]


def is_binary(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


def evaluate(model, x: torch.Tensor, k: int = 1000, seed: int = 0, batch_size: int = 100,
             progress: Callable[[int], None] | None = None, y: torch.Tensor | None = None) -> dict:
    """Everything ``vaekit evaluate`` reports, as means per example in nats.

    Returns a dict with ``elbo``, ``rec``, ``kl`` (``elbo = -(rec + kl)``; ``rec`` averages
    ``-log p(x|z)`` over the ``k`` samples; ``kl`` is in closed form or, where there is none, the
    Monte Carlo mean of ``log q - log p`` over the same samples: ``kl_estimator`` says which),
    ``log_likelihood`` and its standard error across examples, ``importance_samples``,
    ``n_examples``, ``active_units``, ``kl_per_dim`` (None where the KL does not factorise), and
    ``bits_per_dim`` (where the likelihood is a probability of discrete data: Bernoulli on binary
    data, the discretized logistic mixture; else None) and ``reconstruction_mse``
    (:func:`reconstruction_error`).
    """
    ll, log_px, log_ratio = importance_sample(model, x, k, batch_size=batch_size, seed=seed,
                                              progress=progress, y=y)
    diag = latent_diagnostics(model, x, y=y, seed=seed)
    n = len(x)
    rec = float(-log_px.mean())
    kl = float(sum(diag["kl_per_dim"])) if diag["kl_per_dim"] is not None else float(-log_ratio.mean())
    d = math.prod(model.data_shape)
    discrete = len(x) > 0 and model.discrete(x)
    return {
        "elbo": -(rec + kl), "rec": rec, "kl": kl, "kl_estimator": model.kl_estimator,
        "log_likelihood": float(ll.mean()),
        "log_likelihood_stderr": float(ll.std() / math.sqrt(n)) if n > 1 else float("nan"),
        "importance_samples": k, "n_examples": n,
        "active_units": diag["active_units"], "kl_per_dim": diag["kl_per_dim"],
        "bits_per_dim": float(-ll.mean() / (d * math.log(2))) if discrete else None,
        "reconstruction_mse": reconstruction_error(model, x, batch_size=batch_size, y=y),
    }


def evaluate_without_likelihood(model, x: torch.Tensor, seed: int = 0,
                                y: torch.Tensor | None = None) -> dict:
    """What ``vaekit evaluate`` reports for a model whose objective does not fit its decoder as
    a likelihood (``objectives.trains_likelihood`` is False: the VAE-GAN, whose decoder also
    follows a GAN term and a reconstruction term in a discriminator's features).

    ``elbo``, ``rec``, ``log_likelihood`` (and their errors, ``bits_per_dim``) are None, and
    ``importance_samples`` is 0: a number there would rank the model against likelihood-trained
    ones on a scale it was not trained for. Reported instead: ``reconstruction_mse`` (see
    :func:`reconstruction_error`), the KL term, ``kl_per_dim`` and the active units, with the
    keys of :func:`evaluate`.
    """
    diag = latent_diagnostics(model, x, y=y, seed=seed)
    kl = float(sum(diag["kl_per_dim"])) if diag["kl_per_dim"] is not None else \
        monte_carlo_kl(model, x, seed, y)
    return {"elbo": None, "rec": None, "kl": kl, "kl_estimator": model.kl_estimator,
            "log_likelihood": None, "log_likelihood_stderr": None, "importance_samples": 0,
            "n_examples": len(x), "active_units": diag["active_units"],
            "kl_per_dim": diag["kl_per_dim"], "bits_per_dim": None,
            "reconstruction_mse": reconstruction_error(model, x, y=y)}


@torch.no_grad()
def monte_carlo_kl(model, x: torch.Tensor, seed: int = 0, y: torch.Tensor | None = None,
                   batch_size: int = 1000) -> float:
    """Mean over ``x`` of a one-sample estimate ``log q(z|x) - log p(z)`` of the KL term."""
    g = torch.Generator(model.device).manual_seed(seed)
    total = 0.0
    for i in range(0, len(x), batch_size):
        q = model.encode(x[i: i + batch_size].to(model.device),
                         None if y is None else y[i: i + batch_size].to(model.device))
        total += float(model.kl_terms(q, q.rsample((1,), generator=g))[0].double().sum())
    return total / max(len(x), 1)


@torch.no_grad()
def reconstruction_error(model, x: torch.Tensor, batch_size: int = 1000,
                         y: torch.Tensor | None = None) -> float:
    """Mean squared error per data value between ``x`` and its reconstruction (the decoder mean
    at the posterior mean, as ``vaekit reconstruct`` draws it), in the data's own units, over
    the observed values (a table's missing cells, NaN, are left out)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(x), batch_size):
        xb = x[i: i + batch_size].to(model.device)
        yb = None if y is None else y[i: i + batch_size].to(model.device)
        err = (model.reconstruct(xb, yb).double() - xb.double()).square()
        seen = ~torch.isnan(err)
        total += float(err[seen].sum())
        count += int(seen.sum())
    model.train(was_training)
    return total / max(count, 1)


@torch.no_grad()
def latent_diagnostics(model, x: torch.Tensor, batch_size: int = 1000,
                       threshold: float = 0.01, y: torch.Tensor | None = None, seed: int = 0) -> dict:
    """KL per latent dimension and active units (Burda et al. 2015, Sec. 5.2).

    A dimension is active when ``Cov_x(E_q[z_d | x]) > threshold``. ``kl_per_dim`` is in closed
    form where the KL factorises over dimensions (for a ladder VAE, given one sample of the
    layers above), else None.
    """
    device = next(model.parameters()).device
    g = torch.Generator(device).manual_seed(seed)
    means, kls = [], []
    was_training = model.training
    model.eval()
    for i in range(0, len(x), batch_size):
        xb = x[i: i + batch_size].to(device)
        yb = None if y is None else y[i: i + batch_size].to(device)
        means.append(model.encode(xb, yb).mean.double().cpu())
        kl_dims = model.terms(xb, yb, 1, g).kl_dims
        kls.append(None if kl_dims is None else kl_dims[0].double().cpu())
    model.train(was_training)
    mu = torch.cat(means)
    var = mu.var(0, unbiased=False) if len(mu) > 1 else torch.zeros(mu.shape[1], dtype=torch.float64)
    factorised = bool(kls) and all(k is not None for k in kls)
    return {"kl_per_dim": torch.cat(kls).mean(0).tolist() if factorised else None,
            "active_units": int((var > threshold).sum()),
            "posterior_mean_variance": var.tolist()}
