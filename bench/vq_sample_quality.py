"""Sample quality of a VQ-VAE run (python bench/vq_sample_quality.py RUN; docs/vqvae.md) with the protocol of bench/sample_quality.py (--split test):
vaekit's MNIST classifier, the 10,000 MNIST test images as evaluation rows, 5 draws of 10,000
samples, seed 1; samplers: the uniform prior over codes and the fitted pixelcnn prior."""
import json, sys, time
import torch
from vaekit import pipeline
from vaekit.data import load_data
from vaekit.evaluation import quality
from vaekit.evaluation.featurenet import classifier_for
from vaekit.io.images import save_grid

run = sys.argv[1]
say = lambda s: print(s, file=sys.stderr, flush=True)
model, cfg = pipeline.load_run(run, "cpu")
data = load_data("mnist", log=lambda _: None)
t0 = time.perf_counter()
clf = classifier_for(data, "cpu", log=say)
say(f"classifier ready ({time.perf_counter() - t0:.0f} s), test accuracy {clf.accuracy:.4f}")
feats = lambda x: clf.features(x)
out = {}
for name in ("pixelcnn", "prior"):
    s = pipeline.run_sampler(run, model, cfg, name, fit="never", log=say)
    draw = quality.model_draw(model, s)
    t0 = time.perf_counter()
    r = quality.measure(feats, data.x_test, draw, 10_000, 5, 1, device=model.device)
    save_grid(draw(64, torch.Generator("cpu").manual_seed(1)), f"{run}/samples_{name}.png", nrow=8)
    out[name] = r
    print(name, json.dumps(r), f"{time.perf_counter() - t0:.0f} s", flush=True)
