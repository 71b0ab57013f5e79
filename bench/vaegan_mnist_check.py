"""A short VAE-GAN run on 8,000 MNIST images against a plain VAE of the same budget: it must
not diverge (no skipped step, finite losses, a discriminator that neither wins nor pauses for
whole epochs), its reconstructions must beat the mean image and come near the VAE's, and the
code must carry information. Needs MNIST (fetched once into the cache); prints the numbers and
exits 1 when a check fails. (Was a unit test that only ran where MNIST happened to be cached.)

    python bench/vaegan_mnist_check.py
"""

from __future__ import annotations

import math
import sys

from vaekit import pipeline
from vaekit.config.settings import RunConfig
from vaekit.data import Dataset, load_data
from vaekit.evaluation.measures import reconstruction_error


def short_run(data: Dataset, **options):
    cfg = RunConfig().update({"epochs": 4, "precision": "fp32", "device": "cpu", "seed": 1,
                              "batch_size": 64, "hidden": 128, **options})
    cfg.data.data = data.name
    return pipeline.train(cfg, data, out=None, log=lambda s: None, progress=False)


def main() -> int:
    mnist = load_data("mnist")
    data = Dataset("mnist-subset", mnist.x_train[:8000], mnist.x_test[:500])
    gan, vae = short_run(data, objective="vaegan"), short_run(data)
    h = gan.history
    xt = data.x_test
    mean_image = float(((xt - data.x_train.mean(0)) ** 2).mean())
    gan_mse, vae_mse = reconstruction_error(gan.model, xt), reconstruction_error(vae.model, xt)
    checks = {
        "no skipped step, finite test loss": all(r["skipped_steps"] == 0 and math.isfinite(r["test_loss"]) for r in h),
        "discriminator in (0, 1), never paused a whole epoch": all(0.0 < r["dis_real"] < 1.0 and r["dis_paused"] < 1.0 for r in h),
        f"reconstruction MSE {gan_mse:.4f} < 0.75 x the mean image's {mean_image:.4f}": gan_mse < 0.75 * mean_image,
        f"reconstruction MSE {gan_mse:.4f} < 1.5 x the VAE's {vae_mse:.4f}": gan_mse < 1.5 * vae_mse,
        f"test KL {h[-1]['test_kl']:.2f} > 5 nats": h[-1]["test_kl"] > 5.0,
    }
    for what, ok in checks.items():
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
