"""The trainer's speed mechanisms give the numbers of the plain path they replace, bit for bit:
kept bf16 weight copies against autocast's per-step casts, the cached fused Adam call against
``torch.optim.Adam.step``, deferred fsync against synchronous writes, and flushed denormals."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from vaekit.io import files as fileio
from vaekit.config.settings import RunConfig
from vaekit.errors import VaekitError
from vaekit.compute.precision import LowPrecisionCopy
from vaekit.compute.runtime import AdamStep, cpu_has_native_bf16, denormals_flushed, flushes_denormals
from vaekit.training.trainer import Trainer
from vaekit.models.build import build_model

needs_bf16 = pytest.mark.skipif(not cpu_has_native_bf16(), reason="no native bf16 on this CPU")


def images(n: int = 384, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 8, 8, generator=g) ** 3).round(decimals=2)


def trained(low: bool, epochs: int = 2, **options) -> tuple[list, list[torch.Tensor], Trainer]:
    """Train on a fixed small set with kept copies (``low``) or with plain autocast."""
    x = images()
    cfg = RunConfig()
    cfg.update({"epochs": epochs, "seed": 3, "device": "cpu", "batch_size": 64,
                "precision": "bf16", "hidden": 32, "latent_dim": 4, **options})
    torch.manual_seed(3)
    model = build_model(cfg.model, tuple(x.shape[1:]))
    model.preprocess.fit(x)
    tr = Trainer(model, cfg.train, log=lambda s: None, progress=False)
    assert (tr.low is not None) is True
    if not low:  # the path the copies replace: autocast casts the fp32 weights every step
        tr.low, tr.train_model = None, tr.model
    rows = [tr.train_epoch(x, False, e) for e in range(1, epochs + 1)]
    return rows, [p.detach().clone() for p in model.parameters()], tr


@needs_bf16
@pytest.mark.parametrize("options", [{}, {"prior": "vamp", "prior_components": 3},
                                     {"likelihood": "gaussian", "learn_obs_std": True},
                                     {"clip_grad": 1.0}, {"arch": "conv"},
                                     {"top_latent_dims": (2,)}, {"objective": "iwae", "k": 3}],
                         ids=["default", "vamp", "gaussian", "clip", "conv", "ladder", "iwae"])
def test_kept_bf16_copies_train_exactly_like_autocast(options):
    rows_low, params_low, _ = trained(True, **options)
    rows_cast, params_cast, _ = trained(False, **options)
    assert np.array_equal(rows_low, rows_cast, equal_nan=True)  # tc is NaN without a TC term
    assert all(torch.equal(a, b) for a, b in zip(params_low, params_cast))


@needs_bf16
def test_copies_share_what_autocast_does_not_cast():
    cfg = RunConfig()
    cfg.update({"likelihood": "gaussian", "learn_obs_std": True, "prior": "mixture",
                "latent_dim": 3, "hidden": 16})
    model = build_model(cfg.model, (10,))
    low = LowPrecisionCopy(model, torch.bfloat16)
    twin = dict(low.module.named_parameters())
    for name, p in model.named_parameters():
        if name.endswith(("weight", "bias")) and any(p is m for m in low.masters):
            assert twin[name].dtype == torch.bfloat16 and twin[name] is not p
        else:  # the learned scale and the mixture's parameters are the master's own
            assert twin[name] is p
    assert len(low.masters) == 8  # four Linear layers, weight and bias each
    # every master gradient is a view of the one buffer the finiteness check sums
    assert all(p.grad.data_ptr() >= low.grad_buffer.data_ptr() for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == low.grad_buffer.numel()


@needs_bf16
def test_a_non_finite_gradient_skips_the_step_with_kept_copies():
    _, _, tr = trained(True, epochs=1)
    before = [p.detach().clone() for p in tr.model.parameters()]
    state = {k: v.clone() for k, v in tr.optimizer.state[next(tr.model.parameters())].items()}
    x = images(64, seed=1)
    tr.low.zero_grad()
    with tr.autocast:
        loss = tr.train_model(x, 1.0, noise=torch.zeros(1, 64, 4)).loss.sum()
    loss.backward()
    tr.low.copies[2].grad[0, 0] = float("nan")  # one weight's gradient, the loss still finite
    params = [p for p in tr.model.parameters() if p.requires_grad]
    assert torch.isfinite(loss) and tr.guarded_step(loss, params).item() == 1.0
    assert all(torch.equal(a, b) for a, b in zip(before, tr.model.parameters()))
    after = tr.optimizer.state[next(tr.model.parameters())]
    assert all(torch.equal(state[k], after[k]) for k in state)  # step count and moments too
    assert all(torch.equal(c, m.to(c.dtype)) for c, m in zip(tr.low.copies, tr.low.masters))


def adam_pair(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(5, 3), (3,), (7,)]
    a = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    return a, b, [torch.randn(s, generator=g) for s in shapes]


def test_cached_fused_adam_step_matches_torch_optim_bit_for_bit():
    a, b, _ = adam_pair()
    opt_a = torch.optim.Adam(a, lr=1e-2, fused=True)
    opt_b = torch.optim.Adam(b, lr=1e-2, fused=True)
    step = AdamStep(opt_a)
    g = torch.Generator().manual_seed(1)
    for i in range(12):
        grads = [torch.randn(p.shape, generator=g) for p in a]
        skip = torch.tensor(1.0 if i in (3, 7) else 0.0)  # skipped steps leave everything as is
        for group in (opt_a.param_groups[0], opt_b.param_groups[0]):
            group["lr"] = 1e-2 * (1 + i) / 12  # a schedule changes lr between steps
        for p, q, gr in zip(a, b, grads):
            p.grad, q.grad = gr.clone(), gr.clone()
        step(skip)
        opt_b.found_inf = skip
        opt_b.step()
        if i == 5:  # state reloaded (resume): the cached lists are gathered again
            opt_a.load_state_dict(opt_a.state_dict())
            step.invalidate()
    assert all(torch.equal(p, q) for p, q in zip(a, b))
    for p, q in zip(a, b):
        sa, sb = opt_a.state[p], opt_b.state[q]
        assert all(torch.equal(sa[k], sb[k]) for k in ("step", "exp_avg", "exp_avg_sq"))
    assert float(opt_a.state[a[0]]["step"]) == 10.0


def test_cached_adam_step_falls_back_when_a_gradient_is_missing():
    a, b, grads = adam_pair()
    opt_a, opt_b = (torch.optim.Adam(ps, lr=1e-2, fused=True) for ps in (a, b))
    step = AdamStep(opt_a)
    for rnd in range(3):
        for i, (p, q, gr) in enumerate(zip(a, b, grads)):
            keep = not (rnd == 2 and i == 1)  # the second parameter unused in the last step
            p.grad = gr.clone() if keep else None
            q.grad = gr.clone() if keep else None
        step(torch.tensor(0.0))
        opt_b.found_inf = torch.tensor(0.0)
        opt_b.step()
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_deferred_writes_land_in_order_and_in_place(tmp_path, monkeypatch):
    order = []
    replace = os.replace
    monkeypatch.setattr(os, "replace", lambda src, dst: (order.append(os.path.basename(dst)),
                                                         replace(src, dst)))
    with fileio.deferred_sync():
        for i in range(20):
            fileio.atomic_write_bytes(tmp_path / f"f{i}", bytes([i]) * 1000)
        fileio.drain_writes()
        assert (tmp_path / "f19").read_bytes() == bytes([19]) * 1000
        fileio.atomic_write_bytes(tmp_path / "f0", b"again")
    assert order == [f"f{i}" for i in range(20)] + ["f0"]
    assert (tmp_path / "f0").read_bytes() == b"again"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"f{i}" for i in range(20))


def test_a_failed_deferred_write_raises_and_stops_the_later_ones(tmp_path, monkeypatch):
    replace = os.replace

    def failing(src, dst):
        if str(dst).endswith("bad"):
            raise OSError(28, "No space left on device")
        replace(src, dst)
    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(VaekitError, match="cannot write .*bad: No space left"):
        with fileio.deferred_sync():
            fileio.atomic_write_bytes(tmp_path / "good", b"1")
            fileio.atomic_write_bytes(tmp_path / "bad", b"2")
            fileio.atomic_write_bytes(tmp_path / "later", b"3")
    assert (tmp_path / "good").read_bytes() == b"1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good"]  # no temp file left behind


def test_denormals_flushed_on_every_thread_while_training_then_restored():
    from sklearn.decomposition import PCA

    from vaekit.compute import runtime

    PCA(2).fit(np.random.default_rng(0).random((50, 5)))  # scikit-learn loads its own libgomp
    runtime._gomp_parallel.cache_clear()  # found again with both copies loaded: torch's is taken
    x = torch.full((1 << 22,), 1e-39)  # large enough for every thread of the pool to take a part
    assert not flushes_denormals() and bool((x * 1.0 != 0).all())
    with denormals_flushed(torch.device("cpu")):
        assert flushes_denormals()
        assert bool((x * 1.0 == 0).all())
    assert not flushes_denormals() and bool((x * 1.0 != 0).all())


EAGER_SCRIPT = r"""
import sys, torch
from vaekit.compute.runtime import AdamStep, make_adam

def run():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt = make_adam(net, 1e-2)
    step = AdamStep(opt)
    x = torch.randn(64, 5)
    for i in range(5):
        opt.zero_grad(set_to_none=True)
        net(x).pow(2).mean().backward()
        step(torch.tensor(1.0 if i == 2 else 0.0))
    state = opt.state_dict()
    opt.load_state_dict(state)
    return [p.detach().clone() for p in net.parameters()], state

eager, state = run()
assert "torch._dynamo" not in sys.modules, "training imported torch._dynamo"
import torch._dynamo  # something compiles from now on: torch's own wrapping must take over
compiled, state2 = run()
assert all(torch.equal(a, b) for a, b in zip(eager, compiled))
assert all(torch.equal(state["state"][k]["exp_avg"], state2["state"][k]["exp_avg"]) for k in state["state"])
fn = torch.optim.Optimizer.zero_grad.__wrapped__
assert getattr(fn, "__dynamo_disable").__module__.startswith("torch"), "the check did not step aside"
print("ok")
"""


def test_training_steps_without_importing_dynamo_and_gives_the_same_numbers():
    """torch.optim's wrappers import torch._dynamo (1.1 s) on first use; vaekit's steps skip
    them until something loads it, then torch's wrapping takes over, with identical numbers."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", EAGER_SCRIPT], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
