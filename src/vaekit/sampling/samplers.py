"""Where generated codes come from: the prior, or a density fitted to the training codes.

A VAE's prior p(z) and its aggregate posterior q(z) = E_x q(z|x) differ; codes drawn where the
prior has mass but q(z) has none decode to images unlike the data. Fitting a density to codes
of the training data after training and sampling from it closes that gap:

- ``prior``: p(z), the model's own prior;
- ``expost``: a full-covariance Gaussian mixture fitted to the codes by EM (scikit-learn), its
  number of components chosen by the log-likelihood of held-out codes ("ex-post density
  estimation", Ghosh et al. 2020);
- ``two-stage``: a second, small VAE trained on the codes, sampled from its own N(0, I) prior
  and its gaussian p(z|u) (Dai & Wipf 2019). It is a vaekit model trained by vaekit's
  pipeline: an mlp body and a gaussian likelihood with a learned scale.

The codes are one draw from q(z|x) per training example (the codes the decoder was trained on),
drawn with a seeded generator. A fixed 10% of them (:func:`vaekit.data.files.split_indices`)
is held out: the mixture's components and the second VAE's early stopping are chosen on it.

A fitted sampler is stored in the run directory as ``samplers/<name>.safetensors`` (tensors)
and ``samplers/<name>.json`` (its record: the SHA-256 of the tensors file, the digest of the
model weights it was fitted to, and how it was fitted). Nothing is pickled: the mixture is
stored as its weights, means and covariances and rebuilt from them.
"""

from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from vaekit.runs.checkpoint import state_tensors
from vaekit.errors import RunDirError
from vaekit.models.vae import VAEModel
from vaekit.registry import Registry
from vaekit.runs.directory import RunDir
from vaekit.runs.layout import SAMPLERS as SAMPLERS_FOLDER
from vaekit.config.settings import RunConfig
from vaekit.data import Dataset
from vaekit.data.files import split_indices
from vaekit.io.files import atomic_write_bytes, read_regular, write_json
from vaekit.io.stops import held_stops
from vaekit.models.build import build_model
from vaekit.parts.distributions import CholeskyNormal, GaussianMixture
from vaekit.runs.reading import load_state_tensors
from vaekit.runs.store import (check_schema, check_tensors, JSON_LIMIT, kept_row, parse_json,
                               parse_safetensors, TENSOR_LIMIT)

SAMPLERS: Registry[type] = Registry("sampler")
FORMAT, VERSION = "vaekit-sampler", 1
HELD_OUT_FRACTION = 0.1
CODE_SEED_OFFSET = 3_000_017  # the codes' noise never repeats the training streams
FOLDER = SAMPLERS_FOLDER
Log = Callable[[str], None]


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 of a model's tensors (names, shapes, dtypes, values): a fitted sampler belongs
    to the weights with this digest."""
    h = hashlib.sha256()
    for name, t in sorted(state_tensors(model).items()):
        h.update(f"{name}{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def latent_codes(model: VAEModel, x: torch.Tensor, y: torch.Tensor | None, seed: int,
                 batch_size: int = 1000) -> torch.Tensor:
    """One draw from q(z|x) per row, ``(n, latent_dim)`` float32 on the CPU (seeded)."""
    g = torch.Generator(model.device).manual_seed(seed + CODE_SEED_OFFSET)
    out = []
    for i in range(0, len(x), batch_size):
        yb = None if y is None else y[i: i + batch_size].to(model.device)
        qz = model.encode(x[i: i + batch_size].to(model.device), yb)
        out.append(qz.rsample(generator=g).float().cpu())
    return torch.cat(out)


def held_out_split(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The fixed (fit, held-out) row indices of ``n`` codes: the pipeline's own validation
    split, so the two-stage VAE holds out the same codes."""
    return split_indices(n, HELD_OUT_FRACTION, "the latent codes")


class Sampler:
    """Draws codes; subclasses are registered in :data:`SAMPLERS` by name.

    ``record`` holds how it was fitted (JSON-ready); ``tensors()`` what is stored with it.
    """

    name = ""
    fitted = True  # False: nothing to fit or store (the prior)
    # the capability of the model kind it needs (vaekit.models.kinds), or None: every kind
    needs: str | None = "code-samplers"
    wants_rows = False  # True: fit() also gets the training rows themselves (``rows=``)
    draws_only = False  # True: finish() maps draws from p(x|z), not decoder means

    def __init__(self, model: VAEModel, record: dict[str, Any] | None = None) -> None:
        self.model, self.record = model, record or {}

    def codes(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``(n, latent_dim)`` codes on the model's device; all randomness from ``generator``."""
        raise NotImplementedError

    def tensors(self) -> dict[str, torch.Tensor]:
        return {}

    def describe(self) -> str:
        """What was fitted, in a few words."""
        return self.name

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """Decoded rows ``(n, ...)`` -> the rows this sampler gives (most: unchanged)."""
        return x

    def evaluate(self, x: torch.Tensor) -> dict[str, Any]:
        """Numbers a sampler that is a model's learned prior adds to ``vaekit evaluate`` on
        rows ``x`` (:data:`vaekit.models.kinds.LEARNED_PRIOR`); none for the others."""
        return {}

    @classmethod
    def fit(cls, model: VAEModel, codes: torch.Tensor, seed: int, log: Log,
            train: Callable[..., Any]) -> "Sampler":
        """Fit to ``codes`` (rows of :func:`held_out_split` held out); ``train`` is
        :func:`vaekit.pipeline.train`, for samplers that are vaekit models."""
        raise NotImplementedError

    @classmethod
    def rebuild(cls, model: VAEModel, details: dict[str, Any], tensors: dict[str, torch.Tensor],
                where: str) -> "Sampler":
        """The sampler a stored record's ``details`` and tensors describe (checked)."""
        raise NotImplementedError


@SAMPLERS.register("prior")
class PriorSampler(Sampler):
    """p(z), the model's prior: nothing to fit."""

    name, fitted, needs = "prior", False, None

    def codes(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.model.sample_prior(n, generator)

    def describe(self) -> str:
        return f"the model's {self.model.config.prior} prior"


@SAMPLERS.register("expost")
class ExPostSampler(Sampler):
    """A full-covariance Gaussian mixture on the codes (Ghosh et al. 2020, Sec. 4)."""

    name = "expost"
    CANDIDATES = (1, 2, 5, 10, 20, 50, 100)  # tried in order, until the held-out fit drops twice

    def __init__(self, model: VAEModel, weights: torch.Tensor, means: torch.Tensor,
                 covariances: torch.Tensor, record: dict[str, Any] | None = None) -> None:
        super().__init__(model, record)
        self.weights, self.means, self.covariances = weights, means, covariances
        # float64 on the CPU (MPS has no float64); the draws then move to the model's device
        self.mixture = GaussianMixture(weights.log(), CholeskyNormal(means, torch.linalg.cholesky(covariances)))

    def codes(self, n: int, generator: torch.Generator) -> torch.Tensor:
        seed = int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))
        cpu = torch.Generator().manual_seed(seed)
        return self.mixture.sample((n,), generator=cpu).float().to(self.model.device)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"weights": self.weights, "means": self.means, "covariances": self.covariances}

    def describe(self) -> str:
        return f"a {len(self.weights)}-component Gaussian mixture on the training codes"

    @classmethod
    def fit(cls, model, codes, seed, log, train) -> "ExPostSampler":
        from sklearn.mixture import GaussianMixture as SkMixture

        fit_rows, held_rows = held_out_split(len(codes))
        z = codes.double().numpy()
        tried, scores, best, drops = [], [], None, 0
        for k in cls.CANDIDATES:
            if k > len(fit_rows) // 2:
                break
            t0 = time.perf_counter()
            gm = SkMixture(k, covariance_type="full", max_iter=300, random_state=seed).fit(z[fit_rows])
            score = float(gm.score(z[held_rows])) if len(held_rows) else float(gm.score(z[fit_rows]))
            tried.append(k)
            scores.append(score)
            log(f"  expost: {k} components, held-out log-likelihood {score:.3f} nats per code "
                f"({time.perf_counter() - t0:.1f} s)")
            if best is None or score > best[0]:
                best, drops = (score, gm), 0
            else:
                drops += 1
                if drops == 2:
                    break
        gm = best[1]
        details = {"components": int(gm.n_components), "covariance_type": "full",
                   "candidates": tried, "held_out_log_likelihood": scores}
        return cls(model, torch.from_numpy(gm.weights_), torch.from_numpy(gm.means_),
                   torch.from_numpy(gm.covariances_), {"details": details})

    @classmethod
    def rebuild(cls, model, details, tensors, where) -> "ExPostSampler":
        k, d = details.get("components"), model.latent_dim
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise RunDirError(f"{where}: 'components' must be a positive count")
        check_tensors(tensors, {"weights": torch.zeros(k, dtype=torch.float64),
                                "means": torch.zeros(k, d, dtype=torch.float64),
                                "covariances": torch.zeros(k, d, d, dtype=torch.float64)}, where)
        w, cov = tensors["weights"], tensors["covariances"]
        if not (bool((w > 0).all()) and abs(float(w.sum()) - 1) < 1e-6):
            raise RunDirError(f"{where}: the mixture weights are not positive numbers summing to 1")
        if not torch.allclose(cov, cov.transpose(1, 2)) or bool(torch.linalg.cholesky_ex(cov).info.any()):
            raise RunDirError(f"{where}: a mixture covariance is not symmetric positive definite")
        return cls(model, w, tensors["means"], cov)


@SAMPLERS.register("two-stage")
class TwoStageSampler(Sampler):
    """A second VAE on the codes (Dai & Wipf 2019, Sec. 4): u ~ N(0, I), then z ~ p(z|u).

    Its options (:data:`OPTIONS`) follow the paper's second stage at a CPU-friendly size: an
    mlp with two hidden layers, a latent as large as the first VAE's, and a gaussian likelihood
    whose one scale (the paper's gamma) is learned; a cosine schedule and early stopping on the
    held-out codes. Free bits (0.5 nats per dimension, Kingma et al. 2016) keep its posterior
    from collapsing: without them it used 3 of 16 dimensions on MNIST codes, and its samples
    lost the codes' spread (docs/sample_quality.md).
    """

    name = "two-stage"
    OPTIONS = {"arch": "mlp", "hidden": (256, 256), "likelihood": "gaussian", "learn_obs_std": True,
               "preprocess": "none", "epochs": 80, "lr_schedule": "cosine", "patience": 10,
               "free_bits": 0.5, "val_fraction": HELD_OUT_FRACTION, "batch_size": 128, "lr": 1e-3,
               "precision": "fp32"}

    def __init__(self, model: VAEModel, stage2: VAEModel, config, record=None) -> None:
        super().__init__(model, record)
        self.stage2, self.config = stage2.to(model.device).eval(), config

    @torch.no_grad()
    def codes(self, n: int, generator: torch.Generator) -> torch.Tensor:
        pz = self.stage2.decode(self.stage2.sample_prior(n, generator))  # p(z|u), a Gaussian
        noise = torch.randn(pz.mean.shape, generator=generator, device=generator.device)
        return (pz.mean + pz.stddev * noise.to(pz.mean.device)).float()

    def tensors(self) -> dict[str, torch.Tensor]:
        return state_tensors(self.stage2)

    def describe(self) -> str:
        h = ",".join(map(str, self.config.model.hidden))
        return f"a second VAE (mlp {h}, {self.stage2.latent_dim}-d latent) on the training codes"

    @classmethod
    def fit(cls, model, codes, seed, log, train) -> "TwoStageSampler":
        cfg = RunConfig().update({**cls.OPTIONS, "latent_dim": model.latent_dim, "seed": seed,
                                  "device": str(model.device)})
        cfg.data.data = "latent-codes"
        res = train(cfg, Dataset("latent codes", codes, codes[:0]), log=log, progress=False,
                    epoch_log=False)
        kept = kept_row(res.history)
        details = {"config": cfg.to_dict(), "epochs": res.history[-1]["epoch"],
                   "best_epoch": int(kept["epoch"]), "held_out_loss": float(kept.get("val_loss", math.nan))}
        log(f"  two-stage: kept epoch {details['best_epoch']} of {details['epochs']}, held-out "
            f"loss {details['held_out_loss']:.3f} nats per code")
        return cls(model, res.model, res.config, {"details": details})

    @classmethod
    def rebuild(cls, model, details, tensors, where) -> "TwoStageSampler":
        try:
            cfg = RunConfig.from_dict(details["config"]).validate()
        except (KeyError, TypeError, ValueError) as e:
            raise RunDirError(f"{where}: the second VAE's config is not valid ({e})") from None
        stage2 = build_model(cfg.model, (model.latent_dim,))
        load_state_tensors(stage2, tensors, where)
        return cls(model, stage2, cfg)


# -- stored in the run directory ---------------------------------------------------------------
RECORD_KEYS = {"format": str, "version": int, "sampler": str, "latent_dim": int,
               "model_sha256": str, "sha256": str, "seed": int, "n_fit": int, "n_held_out": int,
               "seconds": float, "details": dict}


def fit_sampler(name: str, model: VAEModel, x: torch.Tensor, y: torch.Tensor | None, seed: int,
                train: Callable[..., Any], log: Log) -> Sampler:
    """Fit sampler ``name`` to the codes of the training rows ``x`` (labels ``y`` for a
    conditional model)."""
    cls = SAMPLERS[name]
    if not cls.fitted:
        return cls(model)
    t0 = time.perf_counter()
    codes = latent_codes(model, x, y, seed)
    fit_rows, held_rows = held_out_split(len(codes))
    log(f"fitting the {name} sampler to {len(fit_rows)} training codes ({len(held_rows)} held out)")
    s = cls.fit(model, codes, seed, log, train, **({"rows": x} if cls.wants_rows else {}))
    s.record = {"format": FORMAT, "version": VERSION, "sampler": name, "latent_dim": model.latent_dim,
                "model_sha256": weights_digest(model), "sha256": "", "seed": seed,
                "n_fit": len(fit_rows), "n_held_out": len(held_rows),
                "seconds": round(time.perf_counter() - t0, 2), "details": s.record["details"]}
    return s


def paths(run: Path, name: str) -> tuple[Path, Path]:
    return run / FOLDER / f"{name}.safetensors", run / FOLDER / f"{name}.json"


def save(run: Path, sampler: Sampler) -> None:
    """Write the tensors, then the record that vouches for them (each atomically; the two
    as one unit, so a stop request between them waits until the record is written)."""
    from safetensors.torch import save as st_save

    RunDir(run).folder(FOLDER)  # the run's own folder, never a link to a user's
    tensors_path, record_path = paths(run, sampler.name)
    blob = st_save({k: v.detach().cpu().contiguous() for k, v in sampler.tensors().items()},
                   {"format": FORMAT})
    sampler.record["sha256"] = hashlib.sha256(blob).hexdigest()
    with held_stops():
        atomic_write_bytes(tensors_path, blob)
        write_json(record_path, sampler.record)


def load(run: Path, name: str, model: VAEModel) -> tuple[Sampler | None, str]:
    """The stored sampler ``name`` of a run, checked in full: ``(sampler, "")``, or ``(None,
    why)`` when it is missing or was fitted to other weights. A damaged one is a RunDirError."""
    cls = SAMPLERS[name]
    if not cls.fitted:
        return cls(model), ""
    tensors_path, record_path = paths(run, name)
    if not record_path.exists():
        return None, "it was never fitted"
    rec = parse_json(read_regular(record_path, JSON_LIMIT, RunDirError), str(record_path))
    check_record(rec, name, str(record_path))
    if rec["latent_dim"] != model.latent_dim or rec["model_sha256"] != weights_digest(model):
        return None, "it was fitted to other weights of this run (the run was trained further or replaced)"
    blob = read_regular(tensors_path, TENSOR_LIMIT, RunDirError)
    if hashlib.sha256(blob).hexdigest() != rec["sha256"]:
        raise RunDirError(f"{tensors_path} does not match the SHA-256 in {record_path.name}: it is "
                          f"damaged; fit it again (vaekit fit-sampler {run} --sampler {name})")
    tensors, _ = parse_safetensors(blob, str(tensors_path))
    s = cls.rebuild(model, rec["details"], tensors, str(tensors_path))
    s.record = rec
    return s, ""


def obtain(rd, model: VAEModel, name: str, fit: str, fitter: Callable[[], Sampler], log: Log) -> Sampler:
    """Sampler ``name`` of the run ``rd`` (a :class:`vaekit.runs.directory.RunDir`): the stored one, or
    ``fitter()``'s, stored (``fit``: ``missing``, ``always`` or ``never``, as in
    :func:`vaekit.pipeline.run_sampler`). Fitting and storing hold the run's lock."""
    import contextlib

    if not SAMPLERS[name].fitted:  # the prior: nothing to fit or store
        return SAMPLERS[name](model)
    with rd.lock() if fit != "never" else contextlib.nullcontext():
        why = ""
        if fit != "always":
            try:
                found, why = load(rd.path, name, model)
            except RunDirError as e:
                if fit == "never":
                    raise
                found, why = None, f"it is damaged ({e})"
            if found is not None:
                return found
        if fit == "never":
            raise RunDirError(f"the {name} sampler of {rd.path} cannot be used: {why}; fit it "
                              f"with: vaekit fit-sampler {rd.path} --sampler {name}")
        if why:
            log(f"the {name} sampler is fitted now ({why}); it is stored in {rd.path / FOLDER}")
        s = fitter()
        save(rd.path, s)
        return s


def check_record(rec: Any, name: str, where: str) -> None:
    """The record's keys and types (exactly :data:`RECORD_KEYS`), or a RunDirError."""
    again = "fit it again with vaekit fit-sampler"
    check_schema(rec, RECORD_KEYS, where, again)
    if (rec["format"], rec["version"], rec["sampler"]) != (FORMAT, VERSION, name):
        raise RunDirError(f"{where} is not a record of this vaekit's {name} sampler; {again}")


__all__ = ["SAMPLERS", "Sampler", "fit_sampler", "latent_codes", "load", "obtain", "save",
           "weights_digest"]
