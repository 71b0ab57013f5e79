"""The machinery of one option: a config field that carries its help text, choices and bounds
(:func:`option`), the error that names it (:class:`OptionError`), and the parsers that every
source of options shares (sizes, devices, TOML files). :mod:`vaekit.config.settings` declares the
options themselves with it.
"""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import field
from pathlib import Path
from typing import Any, Callable

from vaekit.errors import ConfigError

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit value
MAX_SIZE = 2**20  # widths, latent sizes, components: far beyond any model that fits in memory

class OptionError(ConfigError):
    """A bad value of the options ``fields``; the message names them as Python fields."""

    def __init__(self, message: str, *fields: str) -> None:
        super().__init__(message)
        self.fields = fields

    def as_flags(self) -> str:
        """The message with each field name written as its command-line flag."""
        import re

        text = str(self)
        for name in self.fields:  # the first mention names the option; later ones may be words
            text = re.sub(rf"(?<![\w-]){name}(?![\w-])", flag(name), text, count=1)
        return text


def flag(name: str) -> str:
    """``latent_dim`` -> ``--latent-dim``."""
    return "--" + name.replace("_", "-")


def option(default: Any, help: str, *, choices: tuple[str, ...] | Callable[[], list[str]] | None = None,
           low: float | None = None, high: float | None = None, low_open: bool = False,
           scope: str = "all", resumable: bool = False, metavar: str | None = None,
           auto: bool = False, const: str | None = None, repeat: bool = False) -> Any:
    """A config field with what the CLI, the estimator and validation need to know.

    Parameters
    ----------
    default : the default value (an immutable one: tuples, not lists).
    help : one sentence for ``--help`` and the estimator's docstring.
    choices : the valid names, or a callable giving them (a registry's names, read lazily).
    low, high : inclusive bounds (``low_open`` makes the lower one strict).
    scope : ``all`` (CLI flag and estimator parameter), ``cli`` (a flag only) or ``internal``
        (set by vaekit, e.g. the number of classes).
    resumable : may change when a run is resumed (``--epochs``, ``--device``, ...).
    auto : when not given, vaekit may choose the value from the data (:mod:`vaekit.config.defaults`)
        and says so in one line.
    const : the value of the flag given without one (an optional-value flag).
    repeat : a text flag that may be given several times; the values are joined by commas.
    """
    return field(default=default, metadata=dict(
        help=help, choices=choices, low=low, high=high, low_open=low_open, scope=scope,
        resumable=resumable, metavar=metavar, auto=auto, const=const, repeat=repeat))


def registry_names(name: str) -> Callable[[], list[str]]:
    """The names of the parts registry ``name`` (``BODIES``, ``LIKELIHOODS``, ...), looked up when
    first needed: importing the parts imports torch, which ``vaekit --help`` does without."""
    def names() -> list[str]:
        # (importing vaekit.parts registers the "table" likelihood too: parts/__init__.py)
        from vaekit.parts import likelihoods, nets, objectives, posteriors, preprocess, priors

        tables = {"BODIES": nets.BODIES, "POSTERIORS": posteriors.POSTERIORS,
                  "PRIORS": priors.PRIORS, "LIKELIHOODS": likelihoods.LIKELIHOODS,
                  "PREPROCESSORS": preprocess.PREPROCESSORS, "OBJECTIVES": objectives.OBJECTIVES}
        return tables[name].names()
    return names


def choices_of(f) -> list[str] | None:
    """The valid names of a field (a dataclasses.Field made by :func:`option`), or None."""
    c = f.metadata["choices"]
    return list(c()) if callable(c) else (list(c) if c else None)


def valid_device(name: str) -> bool:
    """``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N``: the devices vaekit can train on."""
    if name in ("auto", "cpu", "cuda", "mps"):
        return True
    head, _, index = name.partition(":")
    return head == "cuda" and index.isdigit() and int(index) < 1024


def parse_sizes(value: Any, name: str = "hidden") -> tuple[int, ...]:
    """``400``, ``"512,256"`` or ``[512, 256]`` -> ``(512, 256)``; ``()`` or ``""`` -> ``()``."""
    if isinstance(value, str):
        items = [v for v in value.split(",")] if value.strip() else []
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [value]
    try:
        sizes = tuple(int(str(v).strip()) if not isinstance(v, bool) else int("x") for v in items)
    except ValueError:
        raise OptionError(f"{name} must be sizes like 400 or 512,256; got '{value}'", name) from None
    if not sizes and name == "hidden":
        raise OptionError(f"{name} must be sizes like 400 or 512,256; got '{value}'", name)
    if any(s <= 0 or s > MAX_SIZE for s in sizes):
        raise OptionError(f"{name} must be positive sizes like 400 or 512,256 (at most "
                          f"{MAX_SIZE}); got '{value}'", name)
    return sizes


def parse_hidden(value: Any, flag_name: str = "--hidden") -> tuple[int, ...]:
    """Kept for scripts: :func:`parse_sizes` named by a flag."""
    return parse_sizes(value, flag_name.lstrip("-").replace("-", "_"))


def unknown_key_message(key: str, valid) -> str:
    names = sorted(k.replace("_", "-") for k in valid)
    close = difflib.get_close_matches(key.replace("_", "-"), names, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown config key '{key}'{hint}"


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
