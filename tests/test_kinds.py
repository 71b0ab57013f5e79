"""The capability table by model kind: every kind is recognised from its configuration, and
every capability either holds or is refused in one line naming the kind and why."""

import itertools

import pytest

from vaekit.config.settings import RunConfig
from vaekit.errors import ConfigError
from vaekit.models.kinds import CAPABILITIES, LACKS, kind_of, require, supports

CONFIGS = {
    "plain": {}, "conditional": {"conditional": True}, "ladder": {"top_latent_dims": (4,)},
    "semi-supervised": {"semi_supervised": True}, "stacked": {"stack": "x"},
    "vaegan": {"objective": "vaegan"}, "linear": {"arch": "linear"}, "table": {"likelihood": "table"},
    "vq": {"latent": "vq"}, "deep": {"latent": "deep"},
}


def config(kind: str) -> RunConfig:
    cfg = RunConfig()
    for name, value in CONFIGS[kind].items():
        section = "train" if name == "objective" else "model"
        setattr(getattr(cfg, section), name, value)
    return cfg


def test_every_kind_of_the_table_is_recognised():
    assert set(CONFIGS) == set(LACKS)
    assert {k: kind_of(config(k)) for k in CONFIGS} == {k: k for k in CONFIGS}


@pytest.mark.parametrize("kind, capability", itertools.product(sorted(LACKS), sorted(CAPABILITIES)))
def test_each_capability_holds_or_is_refused_in_one_line(kind, capability):
    cfg = config(kind)
    if capability in LACKS[kind]:
        assert not supports(cfg, capability)
        with pytest.raises(ConfigError) as e:
            require(cfg, capability, "the command")
        assert kind in str(e.value) and LACKS[kind][capability] in str(e.value)
        assert "\n" not in str(e.value)
    else:
        assert supports(cfg, capability)
        require(cfg, capability, "the command")
