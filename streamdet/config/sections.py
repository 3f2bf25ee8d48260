"""The sections of the configuration schema: every key, its type, range and default (what `load_config` enforces).

The Alertmanager bridge's section is in config/alertmanager.py; the top-level Config in config/__init__.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Optional, Tuple


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
    # replicas of a topic streamdet creates; -1: the cluster's default.replication.factor (Kafka 2.4 and later)
    replication_factor: int = _range(-1, 100, default=-1)
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
    # fitted baselines: serve a copy refitted on the whole train split after the validation tail calibrated them
    # (train/whole_split.py); deep models ignore it. Chosen on auto's validation protocol (evaluation.md)
    refit: bool = True
    min_channel_share: float = _range(0.0, 1.0, default=0.5)  # --from-topic: channels on fewer entities are left out
    exclude_channels: tuple[str, ...] = ()  # --from-topic: glob patterns of channels not to model (slow trends ...)
    export_format: Literal["torchscript", "export"] = "torchscript"  # bundle format (docs/models.md: Bundle formats)
    # how alerts rank channels (pipeline/attribution.py): "local", how far each channel's value is from that
    # channel's median over the window that scored it, as a tail probability under the same distances on validation;
    # chosen on injected validation anomalies (tools/choose_attribution.py, evaluation.md)
    attribution: Literal["input", "joint", "quantile", "tail", "robust", "zscore", "scaled", "raw", "ratio",
                         "response", "response_quantile", "local"] = "local"


@dataclass(frozen=True)
class ScoringConfig:
    stride: int = _range(1, 100_000, default=20)  # with adaptive: the ceiling the stride grows to under a backlog
    adaptive: bool = True  # stride 1 (score each record at once) at light load, growing only when the daemon lags
    max_batch: int = _range(1, 100_000, default=256)
    max_wait_ms: float = _range(0, 60_000, default=50)
    max_delay_s: float = _range(0, 1e7, default=30.0)  # a point waits at most this long for its stride; 0 = no bound
    threads: int = _range(0, 1024, default=0)  # 0: all cores but one with overlap, else torch's default
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
    attribute_at: Literal["firing", "onset"] = "firing"  # the row whose channels an alert names: the row where it
    # fired, or the first over-threshold row of the run that fired it (its start_ts, min_consecutive - 1 rows earlier)
    resolve_quantile: float = _range(0, 0.9999, default=0.0)  # 0: an alert resolves after `cooldown` points under
    # its threshold; q > 0: under the q-quantile of its bundle's validation scores instead (never above the threshold)
    resolve_idle_s: float = _range(0, 1e9, default=3600.0)  # an open alert whose entity sends nothing for this
    # long (the daemon's clock) resolves at its last point; 0: only points under the threshold resolve an alert


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
