"""Typed configuration, one dataclass per concern, and TOML loading.

Config keys are the command-line flag names (``latent-dim`` or ``latent_dim``); an unknown
key is an error that names the closest valid one.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError


@dataclass
class ModelConfig:
    """What the model is: body, latent size and the probability families."""

    arch: str = "mlp"
    hidden: tuple[int, ...] | None = None  # None: the body's default (mlp 400, conv 1024, resnet 512)
    latent_dim: int = 20
    posterior: str = "diagonal"
    prior: str = "normal"
    likelihood: str = "bernoulli"
    obs_std: float = 1.0  # gaussian likelihood's standard deviation (the start, when learned)
    learn_obs_std: bool = False  # learn one global standard deviation (pPCA with --arch linear)
    min_obs_var: float = 1e-6  # floor on a learned observation variance
    min_var: float = 1e-5  # posterior variance floor (002_0b1c8e9715ecc3b6.txt)
    prior_components: int = 10  # mixture prior: Gaussians; vamp prior: pseudo-inputs
    mixtures: int = 5  # logistic-mixture likelihood: logistics per sub-pixel
    top_latent_dims: tuple[int, ...] = ()  # stochastic layers above the first (ladder VAE), bottom-up
    conditional: bool = False  # labels feed encoder and decoder (CVAE)
    num_classes: int = 0  # set from the training labels when conditional

    def validate(self) -> None:
        from .likelihoods import LIKELIHOODS
        from .posteriors import POSTERIORS
        from .priors import PRIORS
        from .nets import BODIES

        for registry, name in ((BODIES, self.arch), (POSTERIORS, self.posterior), (PRIORS, self.prior),
                               (LIKELIHOODS, self.likelihood)):
            registry[name]  # raises ConfigError naming the closest valid choice
        positive(self, "latent_dim", "obs_std")
        if self.hidden is not None:
            if not self.hidden or any(int(h) <= 0 for h in self.hidden):
                raise ConfigError(f"--hidden must be positive widths like 400 or 512,256; got {self.hidden}")
        if self.min_var < 0 or self.min_obs_var < 0:
            raise ConfigError(f"--min-var and --min-obs-var must be >= 0, got {self.min_var}, "
                              f"{self.min_obs_var}")
        if self.learn_obs_std and self.likelihood not in ("gaussian", "laplace"):
            raise ConfigError("--learn-obs-std applies to --likelihood gaussian or laplace only")
        positive(self, "prior_components", "mixtures")
        if any(int(d) <= 0 for d in self.top_latent_dims):
            raise ConfigError(f"--top-latent-dims must be positive sizes like 16 or 32,16; got "
                              f"{self.top_latent_dims}")
        if self.conditional and self.num_classes < 2 and self.num_classes != 0:
            raise ConfigError(f"--conditional needs at least 2 classes, got {self.num_classes}")


@dataclass
class TrainConfig:
    """How the model is trained. Defaults are the reference configuration."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "constant"  # or cosine: anneal lr to 0 over --epochs, step by step
    beta: float = 1.0  # weight of the KL term (beta-VAE); 1 is the ELBO
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"  # bf16 where the hardware has it natively (faster, same loss: README)
    eval_batch_size: int = 1000  # evaluation needs no gradients: bigger batches are cheaper
    kl_warmup: int = 0  # epochs over which the KL weight ramps linearly from 0 to beta
    free_bits: float = 0.0  # nats per latent dimension below which KL is not penalised
    clip_grad: float = 0.0  # max gradient norm; 0 turns clipping off
    max_skips: int = 20  # consecutive non-finite steps (skipped) before training stops
    tensorboard: bool = False  # also log scalars and image grids to RUN/tensorboard
    objective: str = "elbo"  # elbo (averaged over --k samples) or iwae (Burda et al. 2015)
    k: int = 1  # samples per example in the training objective
    max_minutes: float = 0.0  # wall-clock budget: no epoch starts that would end past it (0: none)

    def validate(self) -> None:
        positive(self, "epochs", "batch_size", "lr", "eval_batch_size", "max_skips")
        if self.kl_warmup < 0 or self.free_bits < 0:
            raise ConfigError(f"--kl-warmup and --free-bits must be >= 0, got {self.kl_warmup}, "
                              f"{self.free_bits}")
        if self.clip_grad < 0:
            raise ConfigError(f"--clip-grad must be >= 0 (0 turns it off), got {self.clip_grad}")
        if self.beta < 0:
            raise ConfigError(f"--beta must be >= 0, got {self.beta}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"--device must be auto, cpu or cuda, got '{self.device}'")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"--lr-schedule must be constant or cosine, got '{self.lr_schedule}'")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"--precision must be auto, fp32 or bf16, got '{self.precision}'")
        from .objectives import OBJECTIVES

        OBJECTIVES[self.objective]  # raises ConfigError naming the closest valid choice
        positive(self, "k")
        if self.max_minutes < 0:
            raise ConfigError(f"--max-minutes must be >= 0 (0: no limit), got {self.max_minutes}")
        if self.objective == "iwae" and self.free_bits > 0:
            raise ConfigError("--free-bits applies to --objective elbo only")


@dataclass
class DataConfig:
    """Where the data comes from and how the test split is made."""

    data: str = ""
    test_fraction: float = 0.1
    stream: bool = False  # read data batch by batch (larger than memory): .npy mapped, images decoded by workers

    def validate(self) -> None:
        if not 0.0 <= self.test_fraction < 1.0:
            raise ConfigError(f"--test-fraction must be in [0, 1), got {self.test_fraction}")


@dataclass
class RunConfig:
    """Everything that defines a run; saved as ``config.json`` in the run directory."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def validate(self) -> "RunConfig":
        self.model.validate()
        self.train.validate()
        self.data.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunConfig":
        parts = {}
        for f in fields(cls):
            sub = dict(d.get(f.name, {}))
            known = {g.name for g in fields(f.default_factory)}
            unknown = set(sub) - known
            if unknown:
                raise ConfigError(f"config section '{f.name}' has unknown keys {sorted(unknown)}; "
                                  "was it written by a newer vaekit?")
            for key in TUPLE_FIELDS:
                if sub.get(key) is not None:
                    sub[key] = tuple(sub[key])
            parts[f.name] = f.default_factory(**sub)
        return cls(**parts)

    def update(self, flat: dict[str, Any]) -> "RunConfig":
        """Set values from flat flag-named keys (``latent_dim=32``), in whichever section owns them."""
        owners = flat_keys(self)
        for key, value in flat.items():
            name = key.replace("-", "_")
            if name not in owners:
                raise ConfigError(unknown_key_message(key, owners))
            section = getattr(self, owners[name])
            setattr(section, name, coerce(name, value, getattr(type(section)(), name)))
        return self


def parse_hidden(value: Any, flag: str = "--hidden") -> tuple[int, ...]:
    """``400``, ``"512,256"`` or ``[512, 256]`` -> ``(512, 256)``."""
    what = "widths" if flag == "--hidden" else "sizes"
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
    try:
        widths = tuple(int(str(v).strip()) for v in items)
    except ValueError:
        raise ConfigError(f"{flag} must be {what} like 400 or 512,256; got '{value}'") from None
    if not widths or min(widths) <= 0:
        raise ConfigError(f"{flag} must be positive {what} like 400 or 512,256; got '{value}'")
    return widths


TUPLE_FIELDS = ("hidden", "top_latent_dims")  # sizes given as 512,256 or a list


def coerce(name: str, value: Any, default: Any) -> Any:
    """Check a config value's type against the field's default (TOML gives typed values)."""
    if name in TUPLE_FIELDS:
        return None if value is None else parse_hidden(value, "--" + name.replace("_", "-"))
    flag = "--" + name.replace("_", "-")
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and isinstance(default, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float))
        value = float(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(f"{flag} must be {type(default).__name__}, got {value!r}")
    return value


def flat_keys(cfg: RunConfig) -> dict[str, str]:
    """Flag name (underscored) -> the section holding it."""
    return {g.name: f.name for f in fields(cfg) for g in fields(getattr(cfg, f.name))}


def unknown_key_message(key: str, valid) -> str:
    names = sorted(k.replace("_", "-") for k in valid)
    close = difflib.get_close_matches(key.replace("_", "-"), names, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown config key '{key}'{hint}"


def positive(cfg: Any, *names: str) -> None:
    for name in names:
        value = getattr(cfg, name)
        if not value > 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a flat TOML file of flag-named keys."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            table = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    for key, value in table.items():
        if isinstance(value, dict):
            raise ConfigError(f"config file {path}: keys are flag names at the top level "
                              f"(like latent-dim = 20); found a table [{key}]")
    return table
