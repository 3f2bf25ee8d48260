"""One source per setting (issue 15 item 5): each model's Params dataclass holds its defaults (= the "default"
preset) and checks; presets are overrides; the registry is an explicit dict; config loading checks model keys."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from streamdet import cli
from streamdet.config import load_config
from streamdet.errors import ConfigError
from streamdet.models import registry
from streamdet.models.hparams import Hyper

MODELS_DIR = Path(registry.__file__).parent


@pytest.mark.parametrize("name", registry.names())
def test_default_preset_is_the_params_defaults_and_presets_only_override_known_fields(name):
    cls = registry.MODELS[name]
    assert issubclass(cls.Params, Hyper) and cls.Params.__dataclass_params__.frozen
    assert registry.resolve(name, "default") == cls.Params() == registry.resolve(name, None)
    assert "default" not in cls.presets, "the default preset is the dataclass defaults, not a second copy"
    fields = {f.name for f in dataclasses.fields(cls.Params)}
    for preset, overrides in cls.presets.items():
        assert set(overrides) <= fields, (preset, set(overrides) - fields)
        assert registry.resolve(name, preset) != cls.Params() or not overrides


@pytest.mark.parametrize("name", registry.names())
def test_the_built_model_records_its_resolved_hyper_parameters(name):
    model = registry.build(name, 3, 32, "tiny")
    assert model.hparams() == registry.resolve(name, "tiny").as_dict()


def test_registry_is_an_explicit_dict_and_no_model_module_imports_it():
    tree = ast.parse((MODELS_DIR / "registry.py").read_text())
    calls = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert "__import__" not in calls and "import_module" not in (MODELS_DIR / "registry.py").read_text()
    assert not any(isinstance(n, ast.Try) for n in ast.walk(tree)), "no swallowed import errors"
    for path in MODELS_DIR.glob("*.py"):
        if path.name != "registry.py":
            assert "registry" not in {a.module for a in ast.walk(ast.parse(path.read_text()))
                                      if isinstance(a, ast.ImportFrom) and a.module}, path.name
            assert ".registry" not in path.read_text(), path.name


@pytest.mark.parametrize("override,message", [
    ("model.name=lstm_aee", r"model\.name: unknown model 'lstm_aee' \(known: .*lstm_ae.*\)"),
    ("model.preset=tny", r"model\.preset: lstm_ae has no preset 'tny' \(known: default, large, tiny\)"),
    ("model.params.hiden=3", r"model\.params\.hiden: unknown hyper-parameter \(known: hidden, layers, dropout, "),
    ("model.params.hidden=abc", r"model\.params\.hidden: must be an integer"),
    ("model.params.hidden=0", r"model\.params\.hidden: must be >= 1"),
    ("model.patch.size=200", r"model\.patch\.size: must be < model\.window=100"),
    ("model.patch.stride=4", r"model\.patch\.stride: set without model\.patch\.size"),
])
def test_config_load_checks_model_keys_against_the_registry(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_check_config_names_the_known_models(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: lstm\n")
    assert cli.main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "model.name: unknown model 'lstm'" in err and "lstm_ae" in err and "sd_mae" in err
    path.write_text("model:\n  name: usad\n  preset: tiny\n  params: {latent: 4}\n")
    assert cli.main(["check-config", str(path)]) == 0
    assert '"latent": 4' in capsys.readouterr().out
