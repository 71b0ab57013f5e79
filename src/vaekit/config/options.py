"""The machinery of one option: a config field that carries its help text, choices and bounds
(:func:`option`), the error that names it (:class:`OptionError`), and the parsers that every
source of options shares (sizes, devices, TOML files). :mod:`vaekit.config.settings` declares the
options themselves with it.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import tomllib
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Callable

from vaekit.errors import ConfigError
from vaekit.io.files import read_regular
from vaekit.registry import unknown_name_message

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


TOML_LIMIT = 1 << 20  # bytes: a configuration file of flag names is a few hundred


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a flat TOML file of flag-named keys, through the guarded reader every file vaekit
    reads goes through (a regular file only, never a FIFO or device, at most 1 MiB)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist")
    data = read_regular(path, TOML_LIMIT, ConfigError)
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    except RecursionError:  # arrays or tables nested thousands deep
        raise ConfigError(f"config file {path} nests too deeply; it holds flag names at the "
                          "top level (like latent-dim = 20)") from None
    for key, value in table.items():
        if isinstance(value, dict):
            raise ConfigError(f"config file {path}: keys are flag names at the top level "
                              f"(like latent-dim = 20); found a table [{key}]")
    return table


# -- a field's type, its coercion and its checks (types, choices, bounds) ------------------------
# field name -> the config section (a dataclass) that declares it, for the fields' types
OWNERS: dict[str, type] = {}


def own_fields(section: type) -> None:
    """Record ``section`` (a config dataclass) as the owner of its fields."""
    OWNERS.update({f.name: section for f in dataclasses.fields(section)})


def field_kind(f: dataclasses.Field) -> type:
    """The field's value type: bool, int, float, str or tuple (of ints)."""
    return _kind(f.name)


@functools.cache
def _kind(name: str) -> type:
    hint = typing.get_type_hints(OWNERS[name])[name]  # slow: read once per field
    options = (hint, *typing.get_args(hint)) if typing.get_origin(hint) is not tuple else (hint,)
    if any(h is tuple or typing.get_origin(h) is tuple for h in options):
        return tuple
    for kind in (bool, int, float, str):
        if kind in options:
            return kind
    raise TypeError(f"unsupported config field type {hint}")  # a bug in this module


def coerce(f: dataclasses.Field, value: Any) -> Any:
    """``value`` as the field's type (TOML and JSON give typed values; a str '3' is not an int)."""
    kind = field_kind(f)
    if kind is tuple:
        if value is None and f.default is None:
            return None
        return parse_sizes(value, f.name)
    ok = {bool: lambda v: isinstance(v, bool),
          int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str)}[kind](value)
    if not ok:
        raise OptionError(f"{f.name} must be {kind.__name__}, got {value!r}", f.name)
    return float(value) if kind is float else value


def check_fields(section: Any) -> None:
    """Types, choices and bounds of every field of a config section."""
    for f in dataclasses.fields(section):
        value = coerce(f, getattr(section, f.name))
        setattr(section, f.name, value)
        m = f.metadata
        names = choices_of(f)
        if names is not None and value not in names:
            raise OptionError(unknown_name_message(f.name, value, names), f.name)
        values = value if isinstance(value, tuple) else () if value is None else (value,)
        for v in values:
            if isinstance(v, str) or isinstance(v, bool):
                continue
            if isinstance(v, float) and not math.isfinite(v):
                raise OptionError(f"{f.name} must be a finite number, got {v}", f.name)
            low, high = m["low"], m["high"]
            if low is not None and (v <= low if m["low_open"] else v < low):
                what = "positive" if (low == 0 and m["low_open"]) or (low == 1 and isinstance(v, int)) \
                    else f"{'>' if m['low_open'] else '>='} {low:g}"
                raise OptionError(f"{f.name} must be {what}, got {v}", f.name)
            if high is not None and v > high:
                raise OptionError(f"{f.name} must be at most {high:{'d' if isinstance(high, int) else 'g'}}, "
                                  f"got {v}", f.name)
