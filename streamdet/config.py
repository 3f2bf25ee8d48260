"""YAML configuration -> frozen dataclasses.

Every section is a frozen dataclass; each component receives only its own section. Unknown keys, wrong types and
out-of-range values raise ConfigError naming the full key path (``scoring.max_batch: must be >= 1, got 0``), so a bad
config fails at start-up with one line. Strings may reference the environment as ``${VAR}`` or ``${VAR:-default}``
(used for secrets and for the data root). Relative paths are resolved against the config file's directory, so a config
works from any working directory.

Longer than 300 lines on purpose: the whole schema (every key, its type, range and default) reads in one place, next
to the loader that enforces it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Tuple

import yaml

from .errors import ConfigError


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _range(lo: float | None = None, hi: float | None = None, **kw):
    """A dataclass field with an inclusive numeric range checked at load time."""
    return field(metadata={"lo": lo, "hi": hi}, **kw)


@dataclass(frozen=True)
class SecurityConfig:
    protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Optional[Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]] = None
    sasl_username: Optional[str] = None
    sasl_password_env: Optional[str] = None  # name of the environment variable holding the password
    ssl_cafile: Optional[str] = None
    ssl_certfile: Optional[str] = None
    ssl_keyfile: Optional[str] = None


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str = "embedded"  # "host:port,host:port" or "embedded" (bundled broker on a free loopback port)
    metrics_topic: str = "metrics"
    alerts_topic: str = "alerts"
    dlq_topic: str = "metrics-dlq"
    state_topic: str = "streamdet-state"
    group_id: str = "streamdet"
    client_id: str = "streamdet"
    client: Literal["confluent", "kafka-python"] = "confluent"  # the metrics consumer's library (see io/confluent.py)
    partitions: int = _range(1, 10_000, default=4)  # used when streamdet creates a missing topic
    session_timeout_ms: int = _range(1000, 300_000, default=10_000)
    heartbeat_interval_ms: int = _range(100, 60_000, default=1000)
    max_poll_records: int = _range(1, 1_000_000, default=5000)
    poll_timeout_ms: int = _range(1, 60_000, default=100)
    # how long the broker may hold a fetch that finds no new records (see config/smd.yaml)
    fetch_max_wait_ms: int = _range(1, 60_000, default=20)
    commit_interval_ms: int = _range(10, 600_000, default=5000)
    checkpoint_slice_ms: int = _range(1, 60_000, default=5)  # checkpoint writing per loop turn (serve/delivery.py)
    security: SecurityConfig = field(default_factory=SecurityConfig)

    def at(self, bootstrap: Optional[str]) -> "KafkaConfig":
        """This section pointed at `bootstrap` (a running broker; e.g. the embedded one), or unchanged for None."""
        return self if not bootstrap else dataclasses.replace(self, bootstrap_servers=bootstrap)


@dataclass(frozen=True)
class DataConfig:
    root: str = "${STREAMDET_DATA:-../../shared/data}"
    dataset: str = "smd"  # smd | asd | nab | csv | synthetic | any folder under root in the shared layout
    entities: tuple[str, ...] = ()  # empty = every entity of the dataset
    csv_train: Optional[str] = None  # dataset: csv -> a file with a header of channel names
    csv_test: Optional[str] = None
    csv_labels: Optional[str] = None
    timestamp_column: Optional[str] = None  # CSV column of row times (ISO 8601 or epoch s); None = detected
    synthetic_seed: int = 0
    synthetic_entities: int = _range(1, 10_000, default=3)
    synthetic_channels: int = _range(1, 1024, default=8)
    synthetic_length: int = _range(100, 10_000_000, default=7000)  # rows per entity: 4/7 train, 3/7 test
    synthetic_train_anomalies: int = _range(0, 100_000, default=0)  # labelled anomalies in train (sd_mae)


@dataclass(frozen=True)
class PatchConfig:
    """Patching around any sequence model (streamdet/models/patching.py): 0 = off."""

    size: int = _range(0, 100_000, default=0)  # steps per patch; 0 = no patching
    stride: int = _range(0, 100_000, default=0)  # 0 = size (disjoint); < size = sliding (overlapping) patches


@dataclass(frozen=True)
class ScoreConfig:
    """Score engineering on top of the model (train/engineering.py, train/smoothing.py, pipeline/standardise.py);
    auto candidates inherit these unless they set their own. Defaults: docs/evaluation.md, "Score engineering"."""

    channel_norm: bool = False  # divide each channel's contribution by its validation scale before the mean
    smooth: int = _range(0, 10_000, default=0)  # causal moving average of the scores over this many steps; 0 = off
    windows: Tuple[int, ...] = ()  # more window lengths scored at once (rank-normalised mean); () = model.window only
    standardise: bool = False  # per-entity online standardisation of the scores in the pipeline


@dataclass(frozen=True)
class ModelConfig:
    name: str = "lstm_ae"  # a registry name (`streamdet models`); checked when the config loads
    preset: Optional[str] = None  # "default" (= None), "tiny" for tests and quick demos, ...; checked at load
    window: int = _range(2, 100_000, default=100)
    params: dict = field(default_factory=dict)  # overrides of the preset; checked against the model's Params
    patch: PatchConfig = field(default_factory=PatchConfig)
    bundle: str = "../artifacts/lstm_ae-smd.pt"
    auto_candidates: Tuple[str, ...] = ()  # name: auto -> "model key=value ..." specs; empty = train/candidates.py's list
    auto_ensemble: int = _range(0, 20, default=3)  # auto: rank-average the best this many where validation prefers it
    score: ScoreConfig = field(default_factory=ScoreConfig)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = _range(1, 100_000, default=10)
    batch_size: int = _range(1, 1_000_000, default=128)
    lr: float = _range(1e-7, 10.0, default=1e-3)
    weight_decay: float = _range(0.0, 10.0, default=1e-4)
    grad_clip: float = _range(0.0, 1e6, default=1.0)
    patience: int = _range(0, 10_000, default=3)
    val_fraction: float = _range(0.01, 0.9, default=0.2)
    train_stride: int = _range(1, 100_000, default=1)  # step between training windows
    max_windows: int = _range(0, 100_000_000, default=0)  # 0 = no cap; otherwise subsample evenly
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    normalisation: Literal["robust", "global", "none"] = "robust"  # train/scaling.py
    min_channel_share: float = _range(0.0, 1.0, default=0.5)  # --from-topic: channels on fewer entities are left out
    exclude_channels: tuple[str, ...] = ()  # --from-topic: glob patterns of channels not to model (slow trends ...)
    export_format: Literal["torchscript", "export"] = "torchscript"  # bundle format (docs/models.md: Bundle formats)
    # how alerts rank channels (pipeline/attribution.py): each channel's contribution against its own validation
    # distribution; "quantile" chosen on injected validation anomalies (tools/choose_attribution.py, evaluation.md)
    attribution: Literal["quantile", "tail", "robust", "zscore", "scaled", "raw", "ratio", "response",
                         "response_quantile"] = "quantile"


@dataclass(frozen=True)
class ScoringConfig:
    stride: int = _range(1, 100_000, default=20)  # with adaptive: the ceiling the stride grows to under a backlog
    adaptive: bool = True  # stride 1 (score each record at once) at light load, growing only when the daemon lags
    max_batch: int = _range(1, 100_000, default=256)
    max_wait_ms: float = _range(0, 60_000, default=50)
    max_delay_s: float = _range(0, 1e7, default=30.0)  # a point waits at most this long for its stride; 0 = no bound
    threads: int = _range(0, 1024, default=0)  # 0 = torch default
    overlap: bool = True  # the model runs on a worker thread while the next records are decoded (two cores)
    compile: Literal["none", "aoti"] = "none"  # aoti: compile an exported bundle for this host at start-up and reload
    compile_cache: str = ""  # compiled packages; "" = $STREAMDET_CACHE/aoti (default ~/.cache/streamdet/aoti)


@dataclass(frozen=True)
class ThresholdConfig:
    method: Literal["pot", "percentile"] = "pot"
    risk: float = _range(1e-9, 0.5, default=1e-3)  # POT: probability of a normal score exceeding the threshold
    init_level: float = _range(0.5, 0.9999, default=0.98)  # POT: quantile that starts the tail
    percentile: float = _range(50.0, 99.9999, default=99.5)  # percentile method
    warmup: int = _range(0, 10_000_000, default=0)  # points per entity before alerts may fire (window fill is implied)
    update: bool = True  # adapt thresholds online with (non-anomalous) scores


@dataclass(frozen=True)
class AlertingConfig:
    min_consecutive: int = _range(1, 100_000, default=3)
    cooldown: int = _range(1, 1_000_000, default=10)
    top_channels: int = _range(1, 1000, default=3)


@dataclass(frozen=True)
class InputConfig:
    # streamdet = one JSON record per entity per step holding every channel (DESIGN.md §4); the others carry one
    # sample (or one measurement) per message and are assembled into rows (pipeline/formats/, pipeline/assemble.py)
    format: Literal["streamdet", "collectd", "telegraf", "influx", "prometheus"] = "streamdet"
    interval_s: float = _range(0, 1e6, default=0.0)  # row interval; 0 = the messages' own (collectd), else 10 s
    entity_key: Optional[str] = None  # tag/label/field naming the entity; None = host (prometheus: instance)
    channel_tags: Optional[tuple[str, ...]] = None  # tags/labels kept in channel names; None = all but the entity's
    counters: tuple[str, ...] = ()  # glob patterns of channels that are running totals (turned into rates)
    agent_rates: bool = True  # collectd: write_kafka's StoreRates (default true) already sends rates
    carry_forward: int = _range(0, 1_000_000, default=3)  # intervals a missing channel repeats its last value
    max_channels: int = _range(1, 1_000_000, default=4096)  # per entity, for rates and unknown-channel names
    allowed_lateness_s: float = _range(0, 1e9, default=300.0)
    max_future_s: float = _range(0, 1e10, default=86_400.0)  # reject timestamps this far ahead of the wall clock
    max_record_bytes: int = _range(64, 100_000_000, default=65536)
    max_entities: int = _range(1, 10_000_000, default=100_000)
    entity_idle_s: float = _range(0, 1e9, default=3600.0)


@dataclass(frozen=True)
class MetricsConfig:
    host: str = "127.0.0.1"
    port: int = _range(0, 65535, default=9108)  # 0 = pick a free port (tests)
    max_entity_series: int = _range(0, 1_000_000, default=200)


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["text", "json"] = "text"


@dataclass(frozen=True)
class AlertmanagerTLSConfig:
    ca_file: Optional[str] = None  # CA bundle that signed Alertmanager's certificate (default: the system's)
    cert_file: Optional[str] = None  # client certificate (mutual TLS)
    key_file: Optional[str] = None
    insecure_skip_verify: bool = False


@dataclass(frozen=True)
class AlertmanagerAuthConfig:
    """Credentials come from files or environment variables, never from the YAML itself."""
    username: Optional[str] = None  # basic auth (not a secret; its password is)
    password_file: Optional[str] = None
    password_env: Optional[str] = None
    bearer_token_file: Optional[str] = None
    bearer_token_env: Optional[str] = None


@dataclass(frozen=True)
class AlertmanagerConfig:
    """`streamdet alertmanager`: the bridge from the alerts topic to Alertmanager's API v2 (streamdet/alertmanager)."""
    urls: tuple[str, ...] = ()  # every Alertmanager of an HA cluster, e.g. http://alertmanager:9093
    group_id: str = "streamdet-alertmanager"  # the bridge's own consumer group on kafka.alerts_topic
    dlq_topic: str = "alerts-dlq"  # malformed alert messages and alerts Alertmanager refused, with the reason
    timeout_s: float = _range(0.1, 600, default=10.0)
    resend_interval_s: float = _range(0.1, 86_400, default=60.0)  # open alerts are re-posted this often
    max_backoff_s: float = _range(0.1, 3600, default=30.0)  # cap of the retry delay while Alertmanager is down
    labels: dict = field(default_factory=dict)  # added to every alert, e.g. {team: sre, env: prod}
    severity: dict = field(default_factory=lambda: {"critical": 3.0, "warning": 1.5, "info": 0.0})  # min ratio
    grafana_url: str = ""  # generatorURL template, e.g. https://grafana/d/streamdet?var-entity={entity}
    host: str = "127.0.0.1"  # the bridge's /metrics, /healthz, /readyz
    port: int = _range(0, 65535, default=9109)
    tls: AlertmanagerTLSConfig = field(default_factory=AlertmanagerTLSConfig)
    auth: AlertmanagerAuthConfig = field(default_factory=AlertmanagerAuthConfig)

    def __post_init__(self):
        _check_alertmanager(self)


_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")


def _check_alertmanager(am: "AlertmanagerConfig") -> None:
    """Malformed URLs, label names and severity thresholds fail at load time with the key that is wrong."""
    from urllib.parse import urlsplit

    for i, url in enumerate(am.urls):
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
        except ValueError as exc:
            raise ConfigError(f"alertmanager.urls[{i}]: malformed URL {url!r} ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"alertmanager.urls[{i}]: malformed URL {url!r} "
                              "(expected http://host:port or https://host:port)")
    for name, value in am.labels.items():
        if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"alertmanager.labels.{name}: expected a label name [a-zA-Z_][a-zA-Z0-9_]* "
                              f"with a string value, got {value!r}")
    if not am.severity:
        raise ConfigError("alertmanager.severity: needs at least one level, e.g. {warning: 1.0}")
    for name, value in am.severity.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ConfigError(f"alertmanager.severity.{name}: expected a score/threshold ratio >= 0, got {value!r}")


@dataclass(frozen=True)
class Config:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    alerting: AlertingConfig = field(default_factory=AlertingConfig)
    input: InputConfig = field(default_factory=InputConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    alertmanager: AlertmanagerConfig = field(default_factory=AlertmanagerConfig)
    base_dir: str = "."  # directory relative paths resolve against; set by the loader, not by users

    def path(self, value: str) -> Path:
        """Resolve a path from the config against the config file's directory."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (Path(self.base_dir) / p).resolve()


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand_env(value: str, key: str) -> str:
    def sub(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is None:
            raise ConfigError(f"{key}: environment variable {name} is not set")
        return default

    return _ENV.sub(sub, value)


def _check_type(value: Any, tp: Any, key: str) -> Any:
    """Return `value` converted to `tp` where lossless (int->float, list->tuple), else raise ConfigError."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_type(value, inner[0], key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        return tuple(_check_type(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if tp is dict or origin is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            value = float(value)  # PyYAML reads 1e-7 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {type(value).__name__}")
        return _expand_env(value, key)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key)
    raise ConfigError(f"{key}: unsupported type {tp}")  # pragma: no cover - a bug in the schema


def _build(cls: type, raw: Any, prefix: str) -> Any:
    """Build dataclass `cls` from mapping `raw`, checking keys, types and ranges."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "base_dir"}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"{where}{unknown[0]}: unknown key (known: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in raw:
            value = _check_type(raw[name], hints[name], key)
        elif dataclasses.is_dataclass(hints[name]):
            value = _build(hints[name], {}, key)
        else:
            continue
        lo, hi = f.metadata.get("lo"), f.metadata.get("hi")
        if lo is not None and value < lo:
            raise ConfigError(f"{key}: must be >= {lo}, got {value}")
        if hi is not None and value > hi:
            raise ConfigError(f"{key}: must be <= {hi}, got {value}")
        kwargs[name] = value
    return cls(**kwargs)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a raw config mapping."""
    raw = dict(raw)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected KEY=VALUE, e.g. kafka.group_id=test")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = raw
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"{'.'.join(parts[: i + 1])}: is a value, cannot set {key}")
            node[part] = child = dict(child)
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(text) if text != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"{key}: value is not valid YAML ({exc.__class__.__name__})") from None
    return raw


def _merge(base: dict, top: dict) -> dict:
    """Deep-merge two raw config mappings; `top` wins."""
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """Read one config file; a top-level `extends: other.yaml` (relative to it) is loaded first and merged under it."""
    if path in seen:
        raise ConfigError(f"{path}: extends itself (via {' -> '.join(map(str, seen))})")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: extends: expected a file name, got {parent!r}")
    return _merge(_read_yaml((path.parent / parent).resolve(), seen + (path,)), raw)


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Load, validate and resolve a config file (or the defaults when `path` is None)."""
    raw: dict = {}
    base = Path.cwd()
    if path is not None:
        p = Path(path).resolve()
        raw = _read_yaml(p)
        base = p.parent
    raw = apply_overrides(raw, overrides or [])
    cfg = _build(Config, raw, "")
    _check_model(cfg.model)
    return dataclasses.replace(cfg, base_dir=str(base))


def _check_model(model: ModelConfig) -> None:
    """model.name, model.preset, model.params and model.patch against the registry, so typos fail at load."""
    from .models import registry  # imports torch: deferred to the one call that needs it

    from .train.candidates import check_candidates, check_score

    check_score(model)
    if model.name == "auto":
        check_candidates(model)
        return
    registry.resolve(model.name, model.preset, model.params)
    registry.check_patch(model.patch.size, model.patch.stride, model.window)


def to_dict(cfg: Config) -> dict:
    """The resolved configuration as plain data (for check-config and for recording in bundles)."""
    return dataclasses.asdict(cfg)
