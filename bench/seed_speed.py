"""vaekit against the reference listing's training loop, side by side in one process.

Baseline: the PyTorch MNIST VAE of 000_a95b26887c213f59.txt as written there (DataLoader over a
TensorDataset, sigmoid + binary_cross_entropy, a ``.item()`` per batch, separate mean and
log-variance layers, Adam 1e-3, batch 128, test loss and a reconstruction image every epoch),
with torchvision's MNIST replaced by the same in-memory tensors vaekit uses (the baseline is
handed them for free: its data loading is not timed).

vaekit: ``vaekit train mnist`` with the same configuration, run in-process through the CLI,
timed end to end (data from the cache, per-epoch evaluation, images, latent-map snapshots,
checkpoints, metrics); only the final HTML report is left out (``--no-report``), as the
baseline has none.

    python bench/seed_speed.py [--epochs 10] [--seed 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn, optim

from vaekit.cli.main import main as vaekit_main
from vaekit.data import load_data
from vaekit.io.images import grid


class ReferenceVAE(nn.Module):
    """The reference listing's model, unchanged."""

    def __init__(self, input_dim: int = 784, hidden_dim: int = 400, latent_dim: int = 20) -> None:
        super().__init__()
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, latent_dim)
        self.fc22 = nn.Linear(hidden_dim, latent_dim)
        self.fc3 = nn.Linear(latent_dim, hidden_dim)
        self.fc4 = nn.Linear(hidden_dim, input_dim)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        return mu + torch.randn_like(std) * std

    def decode(self, z):
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z))))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        return self.decode(self.reparameterize(mu, logvar)), mu, logvar


def loss_function(recon_x, x, mu, logvar):
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def baseline(data, epochs: int, seed: int, out: Path) -> float:
    """The reference loop; returns the last epoch's test loss (nats per example)."""
    torch.manual_seed(seed)
    bs = 128
    train_loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data.x_train, data.y_train), batch_size=bs, shuffle=True)
    test_loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(data.x_test, data.y_test), batch_size=bs, shuffle=False)
    model = ReferenceVAE()
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(1, epochs + 1):
        model.train()
        train_loss = 0.0
        for batch_idx, (x, _) in enumerate(train_loader):
            optimizer.zero_grad()
            recon, mu, logvar = model(x)
            loss = loss_function(recon, x, mu, logvar)
            loss.backward()
            train_loss += loss.item()
            optimizer.step()
        model.eval()
        test_loss = 0.0
        with torch.no_grad():
            for i, (x, _) in enumerate(test_loader):
                recon, mu, logvar = model(x)
                test_loss += loss_function(recon, x, mu, logvar).item()
                if i == 0:  # the listing's reconstruction_<epoch>.png
                    n = min(x.size(0), 8)
                    comparison = torch.cat([x[:n], recon.view(bs, 1, 28, 28)[:n]])
                    Image.fromarray(grid(comparison, n)).save(out / f"reconstruction_{epoch}.png")
        test_loss /= len(test_loader.dataset)
        print(f"  baseline epoch {epoch}: train {train_loss / len(train_loader.dataset):.4f} "
              f"test {test_loss:.4f}", flush=True)
    return test_loss


def run_vaekit(epochs: int, seed: int, precision: str, out: Path) -> float:
    # --no-report: the reference loop writes no HTML report, so neither does this timing.
    status = vaekit_main(["train", "mnist", "--out", str(out), "--epochs", str(epochs),
                          "--seed", str(seed), "--precision", precision, "--no-report"])
    if status != 0:
        sys.exit(f"vaekit train failed with status {status}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return rows[-1]["test_loss"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--precisions", default="fp32,bf16")
    p.add_argument("--repeats", type=int, default=1,
                   help="rounds of (baseline, vaekit per precision); the table shows medians, since "
                        "a shared machine's speed drifts between rounds")
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.epochs} epochs each, "
          f"{args.repeats} round(s)")
    data = load_data("mnist")  # fetched and cached once, outside the timings
    precisions = args.precisions.split(",")
    times: dict[str, list[float]] = {k: [] for k in ["baseline", *precisions]}
    ratios: dict[str, list[float]] = {k: [] for k in precisions}
    losses: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            # Alternate the order by round: on this machine whatever runs right after another
            # heavy run tends to be slowed for a while, so a fixed order would bias the ratio.
            order = ["baseline", *precisions]
            for name in (order if r % 2 == 0 else order[::-1]):
                t0 = time.perf_counter()
                if name == "baseline":
                    losses[name] = baseline(data, args.epochs, args.seed, Path(tmp))
                else:
                    losses[name] = run_vaekit(args.epochs, args.seed, name, Path(tmp) / f"run-{name}-{r}")
                times[name].append(time.perf_counter() - t0)
            for precision in precisions:
                ratios[precision].append(times["baseline"][-1] / times[precision][-1])
            print(f"round {r + 1}: " + ", ".join(
                f"{k} {v[-1]:.1f}s" for k, v in times.items()), flush=True)
    med = statistics.median
    print("\n| implementation | precision | wall time (s) | final test loss (nats) | speed-up |")
    print("|---|---|---|---|---|")
    print(f"| reference loop | fp32 | {med(times['baseline']):.1f} | {losses['baseline']:.2f} | 1.00x |")
    for precision in precisions:
        spread = (f" (rounds: {', '.join(f'{x:.2f}' for x in ratios[precision])})"
                  if args.repeats > 1 else "")
        print(f"| vaekit train | {precision} | {med(times[precision]):.1f} | {losses[precision]:.2f} | "
              f"{med(ratios[precision]):.2f}x{spread} |")


if __name__ == "__main__":
    main()
