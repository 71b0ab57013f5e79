"""``vaekit evaluate`` with K importance samples against the decoder's FLOP floor.

Times ``vaekit evaluate RUN mnist -k 1000`` end to end on the 10,000 MNIST test images. On the
same machine and in the same process, it measures the matrix-multiply rate (best of several
2048 x 2048 fp32 products). It prints the time that the decoder's FLOPs alone need at that rate,
``n * K * 2 * (latent * hidden + hidden * 784)``, and the ratio. The target is at most 2x.

    python bench/evaluate_speed.py [--run runs/quickstart] [-k 1000]

Without ``--run``, a fresh reference model (784-400-20) is used: the arithmetic is the same
whatever the weights are.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from vaekit.cli.main import main as vaekit_main
from vaekit.config.settings import ModelConfig, RunConfig
from vaekit.models.vae import VAEModel
from vaekit.runs.directory import RunDir


def matmul_rate(n: int = 2048, repeats: int = 10) -> float:
    """Best fp32 GEMM rate in FLOP/s over a few ``n x n`` products."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def decoder_flops(model: VAEModel) -> int:
    """Multiply-add FLOPs of one decoder pass (one latent sample)."""
    return sum(2 * m.in_features * m.out_features for m in model.decoder.modules()
               if isinstance(m, torch.nn.Linear))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="a trained reference run (default: a fresh reference model)")
    p.add_argument("-k", type=int, default=1000)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            run = str(Path(tmp) / "fresh")
            torch.manual_seed(0)
            model = VAEModel(ModelConfig(), (1, 28, 28))
            rd = RunDir(run)
            rd.prepare(resume=False, overwrite=False)
            rd.write_config(RunConfig(), model.data_shape)
            rd.write_model(model)
        model, _ = RunDir(run).load_model()
        rate = matmul_rate()
        n = 10_000
        floor = n * args.k * decoder_flops(model) / rate
        t = time.perf_counter()
        status = vaekit_main(["evaluate", run, "mnist", "--split", "test", "-k", str(args.k)])
        seconds = time.perf_counter() - t
        rate_after = matmul_rate()
    if status != 0:
        raise SystemExit(status)
    print(f"\nmatrix-multiply rate: {rate / 1e9:.0f} GFLOP/s before, {rate_after / 1e9:.0f} after "
          f"(fp32, {torch.get_num_threads()} threads)")
    print(f"decoder FLOPs: {n} x {args.k} x {decoder_flops(model) / 1e6:.3f} MFLOP = "
          f"{n * args.k * decoder_flops(model) / 1e12:.2f} TFLOP -> {floor:.1f} s at the first rate")
    print(f"vaekit evaluate: {seconds:.1f} s = {seconds / floor:.2f}x the FLOP floor (target <= 2x)")


if __name__ == "__main__":
    main()
