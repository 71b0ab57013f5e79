"""What each model kind can do, in one table: the kind of a configuration (plain, conditional,
ladder, semi-supervised, stacked, VAE-GAN, linear, table, VQ-VAE, deep hierarchy) and the capabilities commands need. Every
entry point that needs a capability asks :func:`require` first, so a kind that lacks it gets one
clear line, never a traceback from deep inside; a new kind is a row here.
"""

from __future__ import annotations

from vaekit.config.settings import RunConfig
from vaekit.errors import ConfigError

# capability -> what it is, in the words of the refusal
CAPABILITIES = {
    "density": "log p(x) (the decoder fitted as a likelihood)",
    "code-samplers": "samplers of continuous latent codes (ex-post mixture, two-stage VAE)",
    "onnx": "an ONNX export of the encoder and decoder",
    "code-prior": "a learned prior over discrete codes (the pixelcnn sampler)",
    "table-marginals": "draws of a table's columns mapped onto the training data's marginals "
                       "(the marginals sampler)",
}
# kind -> the capabilities it lacks, and why
LACKS: dict[str, dict[str, str]] = {
    "plain": {}, "conditional": {}, "ladder": {}, "linear": {}, "table": {},
    "deep": {"onnx": "its decoder runs the top-down cells on all groups, and its encoder the "
                     "top-down pass; the run's model.safetensors holds them"},
    "semi-supervised": {"code-samplers": "its code is [z, one-hot y], part discrete",
                        "onnx": "its encoder sums over the classes"},
    "stacked": {"onnx": "it decodes through a frozen front model"},
    "vaegan": {"density": "objective vaegan does not fit the decoder as a likelihood (a GAN "
                          "term drives it too); vaekit evaluate reports its reconstruction "
                          "error instead"},
    "vq": {"code-samplers": "its code is a grid of discrete codebook indices; its learned prior "
                            "is the pixelcnn sampler (vaekit fit-sampler RUN --sampler pixelcnn)",
           "density": "its bound on log p(x) needs the learned prior over its codes: fit it "
                      "(vaekit fit-sampler RUN --sampler pixelcnn), then vaekit evaluate reports it",
           "onnx": "its encoder ends in a nearest-code search; the run's model.safetensors holds "
                   "the encoder, codebook and decoder"},
}
# capabilities only some kinds have: capability -> (those kinds, why the others lack it)
ONLY: dict[str, tuple[frozenset[str], str]] = {
    "code-prior": (frozenset({"vq"}), "its code is continuous, not indices into a codebook (train "
                                      "with --latent vq)"),
    "table-marginals": (frozenset({"table"}), "it is not an unconditional model of a table "
                                              "(likelihood table), whose columns it maps"),
}
for _cap, (_kinds, _why) in ONLY.items():
    for _kind, _lacks in LACKS.items():
        if _kind not in _kinds:
            _lacks.setdefault(_cap, _why)
# kind -> the sampler that is its learned prior, fitted as a second stage on its codes; vaekit
# evaluate reports the bound on log p(x) it gives (Sampler.evaluate) once it is fitted
LEARNED_PRIOR: dict[str, str] = {"vq": "pixelcnn"}


def kind_of(cfg: RunConfig) -> str:
    """The model kind of a run's configuration."""
    m = cfg.model
    if cfg.train.objective == "vaegan":
        return "vaegan"
    if m.latent == "vq":
        return "vq"
    if m.latent == "deep":
        return "deep"
    if m.stack:
        return "stacked"
    if m.semi_supervised:
        return "semi-supervised"
    if m.top_latent_dims:
        return "ladder"
    if m.conditional:
        return "conditional"
    if m.arch == "linear":
        return "linear"
    if m.likelihood == "table":
        return "table"
    return "plain"


def learned_prior(cfg: RunConfig) -> str | None:
    """The sampler that is the learned prior of ``cfg``'s kind (:data:`LEARNED_PRIOR`), or None."""
    return LEARNED_PRIOR.get(kind_of(cfg))


def supports(cfg: RunConfig, capability: str) -> bool:
    if capability not in CAPABILITIES:
        raise KeyError(capability)  # a bug: every capability is named in the table
    return capability not in LACKS[kind_of(cfg)]


def require(cfg: RunConfig, capability: str, what: str) -> None:
    """ConfigError naming the kind and why, unless a model of ``cfg`` has ``capability``, which
    ``what`` (a command or method) needs."""
    if not supports(cfg, capability):
        kind = kind_of(cfg)
        raise ConfigError(f"{what} needs {CAPABILITIES[capability]}, which a {kind} model does "
                          f"not have: {LACKS[kind][capability]}")
