"""Configuration: every shipped config is valid, and bad values fail with one line naming the key path."""

import subprocess
import sys
from pathlib import Path

import pytest

from streamdet.config import load_config
from streamdet.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "config").glob("*.yaml")))
def test_shipped_configs_load(name):
    cfg = load_config(ROOT / "config" / name)
    assert cfg.scoring.stride >= 1
    assert cfg.path(cfg.model.bundle).is_absolute()


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    (tmp_path / "sub").mkdir()
    cfg_file = tmp_path / "sub" / "c.yaml"
    cfg_file.write_text("model:\n  bundle: ../b.pt\ndata:\n  root: data\n")
    cfg = load_config(cfg_file)
    assert cfg.path(cfg.model.bundle) == tmp_path / "b.pt"
    assert cfg.path(cfg.data.root) == tmp_path / "sub" / "data"


@pytest.mark.parametrize("text, overrides, message", [
    ("kafka:\n  grup_id: x\n", [], "kafka.grup_id: unknown key"),
    ("scoring:\n  max_batch: 0\n", [], "scoring.max_batch: must be >= 1, got 0"),
    ("scoring:\n  stride: ten\n", [], "scoring.stride: expected an integer, got 'ten'"),
    ("threshold:\n  method: magic\n", [], "threshold.method: must be one of 'pot', 'percentile'"),
    ("alerting:\n  min_consecutive: true\n", [], "alerting.min_consecutive: expected an integer"),
    ("kafka: 3\n", [], "kafka: expected a mapping"),
    ("", ["scoring.max_wait_ms=-1"], "scoring.max_wait_ms: must be >= 0"),
    ("", ["kafka.security.protocol=TLS"], "kafka.security.protocol: must be one of"),
    ("", ["nosuch.key=1"], "nosuch: unknown key"),
    ("", ["scoring.stride"], "expected KEY=VALUE"),
    ("kafka:\n  group_id: ${NO_SUCH_VAR_STREAMDET}\n", [], "kafka.group_id: environment variable NO_SUCH_VAR"),
    ("kafka: [1, 2\n", [], "not valid YAML at line"),
])
def test_bad_values_name_the_key(tmp_path, text, overrides, message):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(f, overrides)
    assert message in str(err.value)


def test_overrides_and_env_defaults(tmp_path, monkeypatch):
    f = tmp_path / "c.yaml"
    f.write_text("kafka:\n  group_id: ${GROUP:-fallback}\n")
    assert load_config(f).kafka.group_id == "fallback"
    monkeypatch.setenv("GROUP", "from-env")
    assert load_config(f).kafka.group_id == "from-env"
    cfg = load_config(f, ["kafka.group_id=cli", "data.entities=[a, b]", "scoring.max_wait_ms=5"])
    assert cfg.kafka.group_id == "cli"
    assert cfg.data.entities == ("a", "b")
    assert cfg.scoring.max_wait_ms == 5.0


def test_extends_merges_sections(tmp_path):
    (tmp_path / "base.yaml").write_text("kafka:\n  group_id: g\n  alerts_topic: a\n")
    (tmp_path / "child.yaml").write_text("extends: base.yaml\nkafka:\n  group_id: h\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert (cfg.kafka.group_id, cfg.kafka.alerts_topic) == ("h", "a")
    (tmp_path / "loop.yaml").write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(tmp_path / "loop.yaml")


def test_check_config_cli_exit_codes(tmp_path):
    good = subprocess.run([sys.executable, "-m", "streamdet", "check-config", str(ROOT / "config" / "smd.yaml")],
                          capture_output=True, text=True, timeout=60)
    assert good.returncode == 0, good.stderr
    assert '"group_id": "streamdet"' in good.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("scoring:\n  max_batch: -3\n")
    out = subprocess.run([sys.executable, "-m", "streamdet", "check-config", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert lines == ["streamdet: error: scoring.max_batch: must be >= 1, got -3"]


def test_unused_keys_are_gone_and_refused():
    """scoring.device was never read (the daemon scores where the bundle's module runs): it is an unknown key now."""
    with pytest.raises(ConfigError, match="scoring.device: unknown key"):
        load_config(None, ["scoring.device=cpu"])
