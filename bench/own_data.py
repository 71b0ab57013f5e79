"""vaekit's defaults on data nobody tuned them for, next to scikit-learn's baselines in one run.

Each data set is trained with DATA and --out only (the 8x8 digits with --latent-dim 2; the
issue's pPCA case also with its linear flags), then scored on its test split against the
baselines fitted on the same training split: probabilistic PCA with the number of components
chosen on validation rows (raw, and on standardized columns with the log-Jacobian), Gaussian
mixtures (components and covariance type chosen on validation rows), PCA reconstructions with 2
components for the digits, and the exact pPCA maximum likelihood for the generated data.
Validation rows are carved from the training split exactly as the pipeline carves them; no
choice ever looks at the test split.

    python bench/own_data.py [-k 1000] [--only bc,digits] [--mode auto|cli|library]

``--mode cli`` trains through ``vaekit.cli.main.main(["train", DATA, "--out", RUN])``; ``library``
resolves the defaults with :func:`vaekit.config.defaults.resolve_auto` and trains as the pipeline does
(validation split, preprocessing fitted on the rows trained on, best epoch kept), for as long as
the pipeline does not call it itself; ``auto`` picks ``cli`` once it does.
"""

from __future__ import annotations

import argparse
import inspect
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn import datasets as skd
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from vaekit.data import Dataset, load_data
from vaekit.data.files import split_indices
from vaekit.evaluation.measures import log_likelihood

ISSUE_PPCA_FLAGS = ["--arch", "linear", "--likelihood", "gaussian", "--learn-obs-std", "--latent-dim", "4"]
VAL_FRACTION = 0.1  # baselines choose their size on this fraction of the training split


def issue_ppca(n: int = 10_000, seed: int = 0) -> np.ndarray:
    """The issue's data: 16-D pPCA, q = 4, loadings up to 3, non-zero mean, noise 0.5."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(-3, 3, size=(16, 4))
    mu = rng.uniform(-5, 5, size=16)
    return (rng.normal(size=(n, 4)) @ w.T + mu + 0.5 * rng.normal(size=(n, 16))).astype(np.float32)


def write_sources(root: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (DATA argument, extra flags): tables as raw CSV, generated data as .npy."""
    out = {}
    for name, load in (("breast-cancer", skd.load_breast_cancer), ("wine", skd.load_wine),
                       ("diabetes", skd.load_diabetes)):
        path = root / f"{name}.csv"
        np.savetxt(path, load().data, delimiter=",", fmt="%.10g")  # raw units, no header
        out[name] = (str(path), [])
    out["digits"] = ("digits", ["--latent-dim", "2"])
    np.save(root / "ppca.npy", issue_ppca())
    out["ppca"] = (str(root / "ppca.npy"), [])
    out["ppca-linear"] = (str(root / "ppca.npy"), ISSUE_PPCA_FLAGS)
    return out


# -- training ------------------------------------------------------------------------------------
def pipeline_has_defaults() -> bool:
    import vaekit.pipeline

    return "resolve_auto" in inspect.getsource(vaekit.pipeline)


def train_cli(spec: str, flags: list[str], run: Path):
    from vaekit.cli.main import main
    from vaekit.runs.directory import RunDir

    status = main(["train", spec, "--out", str(run), *flags])
    if status != 0:
        raise SystemExit(f"vaekit train {spec} failed with status {status}")
    model, _ = RunDir(run).load_model()
    return model.eval(), []


def train_library(data: Dataset, flags: list[str]):
    """What the pipeline does with the defaults, until it calls them itself."""
    from vaekit.training.callbacks import EarlyStopping
    from vaekit.config.settings import RunConfig
    from vaekit.config.defaults import resolve_auto
    from vaekit.pipeline import validation_split
    from vaekit.training.trainer import Trainer
    from vaekit.models.build import build_model

    cfg, given = RunConfig(), set()
    it = iter(flags)
    for flag in it:
        name = flag.lstrip("-").replace("-", "_")
        value = True if name == "learn_obs_std" else next(it)
        cfg.update({name: int(value) if name == "latent_dim" else value})
        given.add(name)
    lines = resolve_auto(cfg, data.x_train, given)
    cfg.validate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        model = build_model(cfg.model, data.shape)
    fit, val = validation_split(data, cfg.data.val_fraction)
    model.preprocess.fit(fit.x_train)
    stop = [EarlyStopping(cfg.train.patience)] if val is not None else []
    trainer = Trainer(model, cfg.train, log=lambda s: None, progress=False)
    history = trainer.fit(fit, stop, val)
    best = history[-1].get("best_epoch", len(history))
    lines.append(f"trained {len(history)} of {cfg.train.epochs} epochs, kept epoch {best}"
                 + (f" ({trainer.stop_reason})" if trainer.stop_reason else ""))
    return trainer.model.eval(), lines


# -- baselines -----------------------------------------------------------------------------------
def validation_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    fit, val = split_indices(len(x), VAL_FRACTION, "baseline")
    return x[fit], x[val]


def ppca_score(train: np.ndarray, test: np.ndarray, q: int, standardize: bool) -> float:
    """pPCA (Tipping & Bishop 1999) test log p(x) per row; on z-scores plus the log-Jacobian."""
    if not standardize:
        return float(PCA(q).fit(train).score(test))
    sc = StandardScaler().fit(train)
    scale = np.where(sc.scale_ > 0, sc.scale_, 1.0)
    return float(PCA(q).fit(sc.transform(train)).score(sc.transform(test)) - np.log(scale).sum())


def best_ppca(train: np.ndarray, test: np.ndarray, standardize: bool) -> tuple[int, float]:
    fit, val = validation_rows(train)
    qs = range(1, min(train.shape[1], len(fit)))
    q = max(qs, key=lambda q: ppca_score(fit, val, q, standardize))
    return q, ppca_score(train, test, q, standardize)


def best_gmm(train: np.ndarray, test: np.ndarray) -> tuple[str, float]:
    fit, val = validation_rows(train)
    tried = []
    for cov in ("full", "diag"):
        for k in (1, 2, 3, 5, 8, 12):
            if k * (train.shape[1] + 1) > len(fit):
                continue
            gm = GaussianMixture(k, covariance_type=cov, reg_covar=1e-6, random_state=0)
            tried.append((gm.fit(fit).score(val), k, cov))
    _, k, cov = max(tried)
    gm = GaussianMixture(k, covariance_type=cov, reg_covar=1e-6, random_state=0).fit(train)
    return f"{k} {cov}", float(gm.score(test))


# -- the table -----------------------------------------------------------------------------------
def flat(a) -> np.ndarray:
    a = a.numpy() if isinstance(a, torch.Tensor) else a
    return a.reshape(len(a), -1).astype(np.float64)


def run_case(name: str, spec: str, flags: list[str], mode: str, root: Path, k: int) -> list[tuple]:
    data = load_data(spec, log=lambda s: None)  # the split the CLI uses
    xtr, xte = flat(data.x_train), flat(data.x_test)
    t0 = time.perf_counter()
    if mode == "cli":
        model, lines = train_cli(spec, flags, root / f"run-{name}")
    else:
        model, lines = train_library(data, flags)
    seconds = time.perf_counter() - t0
    for line in lines:
        print(f"  [{name}] {line}")
    ll = float(log_likelihood(model, data.x_test, k, seed=0).mean())
    what = "vaekit " + (" ".join(flags) if flags else "defaults")
    rows = [(name, what, ll, None, f"{seconds:.0f} s")]
    if name == "digits":
        mse = float(((flat(model.reconstruct(data.x_test)) - xte) ** 2).mean())
        pca = PCA(2).fit(xtr)
        pca_mse = float(((pca.inverse_transform(pca.transform(xte)) - xte) ** 2).mean())
        rows[0] = (name, what, ll, mse, f"{seconds:.0f} s; MSE {mse / pca_mse:.2f}x PCA-2 (target <= 0.8)")
        rows.append((name, "PCA, 2 components", None, pca_mse, "reconstruction"))
        # The default gaussian likelihood on pixels as they are: a density of the raw values,
        # so pPCA in the same units compares at the VAE's latent size. (Not at a q chosen on
        # validation: with the always-0 border pixels pPCA's noise variance tends to 0 as q
        # grows, and its density without bound.)
        rows.append((name, "pPCA q=2 (raw)", ppca_score(xtr, xte, 2, standardize=False), None,
                     "the VAE's latent size, one shared noise scale"))
        return rows
    if name.startswith("ppca"):
        exact = ppca_score(xtr, xte, 4, standardize=False)
        rows[0] = rows[0][:4] + (f"{seconds:.0f} s; {ll - exact:+.3f} vs exact pPCA",)
        if name == "ppca-linear":
            return rows
        rows.append((name, "pPCA q=4 (exact maximum likelihood)", exact, None, "the true family"))
        return rows
    q, raw = best_ppca(xtr, xte, standardize=False)
    qs, std = best_ppca(xtr, xte, standardize=True)
    comps, gmm = best_gmm(xtr, xte)
    best = max(raw, std)
    rows[0] = rows[0][:4] + (f"{seconds:.0f} s; {ll - best:+.2f} vs best pPCA (target >= -1)",)
    rows += [(name, f"pPCA q={q} (raw)", raw, None, "q on validation"),
             (name, f"pPCA q={qs} (standardized)", std, None, "q on validation"),
             (name, f"Gaussian mixture ({comps})", gmm, None, "size on validation")]
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-k", type=int, default=1000, help="importance samples for log p(x)")
    p.add_argument("--only", default="", help="comma-separated subset of the data sets")
    p.add_argument("--mode", choices=("auto", "cli", "library"), default="auto")
    args = p.parse_args()
    mode = args.mode if args.mode != "auto" else ("cli" if pipeline_has_defaults() else "library")
    print(f"mode: {mode}; {torch.get_num_threads()} threads")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sources = write_sources(root)
        chosen = args.only.split(",") if args.only else list(sources)
        for name in chosen:
            spec, flags = sources[name]
            rows += run_case(name, spec, flags, mode, root, args.k)
    fmt = lambda v, f: "" if v is None else f.format(v)  # noqa: E731
    print("\n| data | model | test log p(x), nats/row | recon. MSE | notes |\n|---|---|---:|---:|---|")
    for name, model, ll, mse, note in rows:
        print(f"| {name} | {model} | {fmt(ll, '{:.3f}')} | {fmt(mse, '{:.4f}')} | {note} |")
    print(f"\nlog p(x) is a density in the data's raw units (k = {args.k} importance samples).")


if __name__ == "__main__":
    main()
