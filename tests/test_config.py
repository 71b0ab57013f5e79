"""Configuration: flag-named keys, typed values, suggestions for unknown keys."""

import pytest

from vaekit.config.settings import ModelConfig, RunConfig, option_fields
from vaekit.config.options import OptionError, read_toml
from vaekit.errors import ConfigError


def test_toml_keys_are_flag_names(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('latent-dim = 8\nhidden = "512,256"\nbeta = 2\nlikelihood = "gaussian"\nepochs = 3\n')
    cfg = RunConfig().update(read_toml(f)).validate()
    assert cfg.model.latent_dim == 8 and cfg.model.hidden == (512, 256)
    assert cfg.train.beta == 2.0 and isinstance(cfg.train.beta, float)
    assert cfg.model.likelihood == "gaussian" and cfg.train.epochs == 3


def test_unknown_key_names_the_closest_valid_one():
    with pytest.raises(ConfigError, match="unknown config key 'latent_dimm'; did you mean 'latent-dim'"):
        RunConfig().update({"latent_dimm": 3})


@pytest.mark.parametrize("key,value,match", [
    ("epochs", "ten", "epochs must be int"),
    ("lr", "fast", "lr must be float"),
    ("arch", 3, "arch must be str"),
    ("hidden", "a,b", "hidden must be sizes"),
    ("epochs", True, "epochs must be int"),
])
def test_values_are_type_checked(key, value, match):
    with pytest.raises(ConfigError, match=match):
        RunConfig().update({key: value})


@pytest.mark.parametrize("section,field,value,match", [
    ("model", "arch", "cnv", "did you mean 'conv'"),
    ("model", "likelihood", "bernouli", "did you mean 'bernoulli'"),
    ("model", "latent_dim", 0, "latent_dim must be positive"),
    ("train", "beta", -1.0, "beta must be >= 0"),
    ("train", "precision", "fp8", "choices: auto, bf16, fp32"),
    ("train", "device", "tpu", "auto, cpu, cuda, cuda:N or mps"),
    ("train", "device", "meta", "auto, cpu, cuda, cuda:N or mps"),
    ("train", "seed", 2**70, "seed must be at most"),
    ("model", "latent_dim", 10**12, "latent_dim must be at most"),
    ("data", "test_fraction", 1.0, "test_fraction must be at most 0.99"),
    ("model", "preprocess", "standardize", "needs data in \\[0, 1\\]"),
])
def test_validation_names_the_problem(section, field, value, match):
    cfg = RunConfig()
    setattr(getattr(cfg, section), field, value)
    with pytest.raises(ConfigError, match=match):
        cfg.validate()


def test_config_roundtrip_and_newer_keys_refused():
    cfg = RunConfig(ModelConfig(hidden=(32, 16)))
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    d = cfg.to_dict()
    d["model"]["flow_layers"] = 4
    with pytest.raises(ConfigError, match="newer vaekit"):
        RunConfig.from_dict(d)


@pytest.mark.parametrize("text,match", [("latent-dim = ", "not valid TOML"),
                                        ("[model]\nlatent-dim = 3", "top level")])
def test_bad_toml_files(tmp_path, text, match):
    f = tmp_path / "c.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match):
        read_toml(f)
    with pytest.raises(ConfigError, match="does not exist"):
        read_toml(tmp_path / "missing.toml")


def test_library_errors_name_fields_and_the_cli_names_flags():
    cfg = RunConfig()
    cfg.model.conditional, cfg.model.prior = True, "vamp"
    with pytest.raises(OptionError) as e:
        cfg.validate()
    assert str(e.value).startswith("conditional does not combine with prior vamp")
    assert e.value.as_flags().startswith("--conditional does not combine with --prior vamp")


def test_saved_values_are_type_checked_on_load():
    d = RunConfig().to_dict()
    d["model"]["latent_dim"] = "2"
    with pytest.raises(ConfigError, match="latent_dim must be int"):
        RunConfig.from_dict(d)
    with pytest.raises(ConfigError, match="JSON object"):
        RunConfig.from_dict([1, 2])


def test_every_field_has_help_and_a_home():
    """Each option is a CLI flag, an estimator parameter, or set by vaekit itself."""
    for name, (_, f) in option_fields().items():
        assert f.metadata["help"].strip(), name
        assert f.metadata["scope"] in ("all", "cli", "internal"), name
