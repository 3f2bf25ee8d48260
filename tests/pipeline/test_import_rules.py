"""The import rules of DESIGN.md §2, checked on the source with `ast` (so a violation fails even if never executed)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "streamdet"


def imported_modules(source: str, package: str) -> set[str]:
    """Absolute dotted names of every module `source` imports (relative imports resolved against `package`)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            parts = package.split(".")
            base = parts[: len(parts) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def imports_of(path: Path) -> set[str]:
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    return imported_modules(path.read_text(), package)


def files(sub: str) -> list[Path]:
    return sorted((PACKAGE / sub).glob("*.py")) if sub else sorted(PACKAGE.rglob("*.py"))


def offending(path: Path, allowed) -> list[str]:
    return sorted(name for name in imports_of(path) if not allowed(name))


@pytest.mark.parametrize("path", files("pipeline"), ids=lambda p: p.name)
def test_pipeline_never_imports_models_train_or_io(path):
    banned = ("streamdet.models", "streamdet.train", "streamdet.io")
    assert offending(path, lambda n: not n.startswith(banned)) == []


@pytest.mark.parametrize("path", files("pipeline"), ids=lambda p: p.name)
def test_only_the_scorer_imports_torch_in_the_pipeline(path):
    if path.name != "scorer.py":
        assert offending(path, lambda n: n.split(".")[0] != "torch") == []


@pytest.mark.parametrize("path", files("models"), ids=lambda p: p.name)
def test_models_import_only_torch_layers_and_errors(path):
    def allowed(name: str) -> bool:
        top = name.split(".")[0]
        return top == "torch" or top in sys.stdlib_module_names or name.startswith(("streamdet.models",
                                                                                      "streamdet.errors"))
    assert offending(path, allowed) == []


@pytest.mark.parametrize("path", files(""), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_kafka_and_prometheus_clients_stay_in_their_adapters(path):
    rel = path.relative_to(PACKAGE).as_posix()
    if rel not in ("io/kafka.py", "io/confluent.py", "io/broker.py"):
        assert offending(path, lambda n: n.split(".")[0] not in ("kafka", "confluent_kafka")) == []
    if rel != "io/metrics.py":
        assert offending(path, lambda n: n.split(".")[0] != "prometheus_client") == []


@pytest.mark.parametrize("path", files(""), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_torch_jit_only_in_bundle(path):
    if path.relative_to(PACKAGE).as_posix() != "bundle.py":
        assert "torch.jit" not in path.read_text()


def test_the_checker_resolves_relative_and_absolute_imports():
    """Guard against a checker that passes because it sees nothing."""
    source = "import torch.nn\nfrom ..models import lstm_ae\nfrom . import windows\nfrom streamdet.io.kafka import X\n"
    names = imported_modules(source, "streamdet.pipeline")
    assert {"torch.nn", "streamdet.models.lstm_ae", "streamdet.pipeline.windows", "streamdet.io.kafka.X"} <= names
    assert "streamdet.errors.DecodeError" in imports_of(PACKAGE / "pipeline" / "decode.py")
