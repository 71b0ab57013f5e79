"""The NLL benchmark's independent cross-check (bench/binarized_mnist_nll.py --check) and vaekit's
importance sampler both match log p(x) integrated on a grid, for each prior of a 2-D latent model."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from torch import distributions as D

from vaekit.config.settings import ModelConfig
from vaekit.evaluation.measures import importance_sample
from vaekit.models.build import build_model

BENCH = Path(__file__).resolve().parents[1] / "bench" / "binarized_mnist_nll.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("binarized_mnist_nll", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def grid_log_px(model, x, half_width=8.0, n=401):
    """log of the integral of p(x|z) p(z) over a 2-D grid (midpoint rule), with stock densities."""
    g = torch.linspace(-half_width, half_width, n, dtype=torch.float64)
    z = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        logits = model.decoder_params(z.float(), None).double()
        prior = model.prior()
        if isinstance(prior, D.MixtureSameFamily):
            c = prior.component_distribution.base_dist
            pz = D.MixtureSameFamily(D.Categorical(logits=prior.mixture_distribution.logits.double()),
                                     D.Independent(D.Normal(c.loc.double(), c.scale.double()), 1))
        else:
            pz = D.Independent(D.Normal(torch.zeros(2, dtype=torch.float64), 1.0), 1)
        log_joint = D.Bernoulli(logits=logits.unsqueeze(1)).log_prob(x.double()).sum(-1) + pz.log_prob(z)[:, None]
    return torch.logsumexp(log_joint, 0) + 2 * math.log(g[1] - g[0])


@pytest.mark.parametrize("prior", ["normal", "mixture", "vamp"])
def test_independent_and_vaekit_estimates_match_the_grid_integral(prior):
    torch.manual_seed(3)
    model = build_model(ModelConfig(arch="mlp", hidden=(16,), latent_dim=2, likelihood="bernoulli",
                                    prior=prior, prior_components=4), (12,)).eval()
    x = (torch.rand(6, 12, generator=torch.Generator().manual_seed(4)) < 0.5).float()
    exact = grid_log_px(model, x)
    ours = importance_sample(model, x, k=4000, generator=torch.Generator().manual_seed(0))[0]
    theirs = load_bench().independent_log_likelihood(model, x, 4000)
    # 4000 draws in two dimensions: a few hundredths of a nat of Monte Carlo error per image
    torch.testing.assert_close(ours.double(), exact, atol=0.06, rtol=0)
    torch.testing.assert_close(theirs.double(), exact, atol=0.06, rtol=0)
