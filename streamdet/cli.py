"""`streamdet` command line: one entry point, one error handler.

Expected failures (StreamdetError: bad config, bad bundle, missing data) print one line and exit 2; anything else is a
bug and keeps its traceback. Heavy imports (torch, Kafka) happen inside the commands so `--help` stays instant.
About 300 lines: besides argument parsing it holds the command bodies that wire Kafka adapters (the topic history of
`train --from-topic`, the producer of `replay`), which tests/pipeline/test_import_rules.py allows only here and in
serve/; the work itself lives in the packages.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Callable, Optional

from .errors import StreamdetError

log = logging.getLogger(__name__)


def _config_args(p: argparse.ArgumentParser, positional: bool = False) -> None:
    if positional:
        p.add_argument("config", metavar="FILE", help="YAML configuration (see config/smd.yaml)")
    else:
        p.add_argument("--config", required=True, metavar="FILE", help="YAML configuration (see config/smd.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set kafka.group_id=x (repeatable)")
    p.add_argument("--log-format", choices=("text", "json"), help="log line format (default: logging.format)")
    p.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="default: logging.level")


def _entities(text: Optional[str]) -> Optional[list[str]]:
    return [e.strip() for e in text.split(",") if e.strip()] if text else None


def _cli_path(value: Optional[str]) -> Optional[str]:
    """Paths typed on the command line are relative to the working directory (config paths: to the config file)."""
    from pathlib import Path

    return str(Path(value).expanduser().resolve()) if value else None


def _load(args: argparse.Namespace):
    from .config import load_config

    overrides = list(args.overrides)
    if getattr(args, "log_format", None):
        overrides.append(f"logging.format={args.log_format}")
    if getattr(args, "log_level", None):
        overrides.append(f"logging.level={args.log_level}")
    cfg = load_config(args.config, overrides)
    from .io.logs import setup_logging

    setup_logging(cfg.logging)
    return cfg


def cmd_check_config(args: argparse.Namespace) -> int:
    from .config import to_dict

    cfg = _load(args)
    resolved = to_dict(cfg)
    resolved["resolved_paths"] = {"data.root": str(cfg.path(cfg.data.root)), "model.bundle": str(cfg.path(cfg.model.bundle))}
    resolved["resolved_model_params"] = _resolved_model_params(cfg.model)
    print(json.dumps(resolved, indent=2, default=str))
    for warning in _missing_paths(cfg):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"ok: {args.config} is valid", file=sys.stderr)
    return 0


def _need_brokers(cfg, what: str) -> None:
    """Commands that talk to a broker another process runs cannot use "embedded" (a broker private to one process)."""
    if cfg.kafka.bootstrap_servers == "embedded":
        raise StreamdetError(f"{what} needs kafka.bootstrap_servers to name your Kafka brokers (host:port,...; "
                             "config/smd.yaml reads STREAMDET_KAFKA): 'embedded' is a broker private to the one "
                             "process that starts it (`run`, `demo`), for demos and tests")


def _missing_paths(cfg) -> list[str]:
    """Paths a copied config often gets wrong (they resolve against the config file's folder): valid, but absent."""
    warnings = []
    root, bundle = cfg.path(cfg.data.root), cfg.path(cfg.model.bundle)
    if cfg.data.dataset not in ("csv", "synthetic") and not (root / cfg.data.dataset).is_dir():
        warnings.append(f"data.root: {root / cfg.data.dataset} does not exist (relative paths are relative to the "
                        "config file; set data.root or STREAMDET_DATA) - train, replay and evaluate need it")
    if not bundle.exists():
        warnings.append(f"model.bundle: {bundle} does not exist yet - `streamdet train` writes it, `streamdet run` "
                        "needs it")
    return warnings


def _resolved_model_params(model) -> dict:
    """The hyper-parameters model.name/preset/params resolve to (checked when the config loaded)."""
    from .models.registry import resolve

    return resolve(model.name, model.preset, model.params).as_dict()


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train_bundle

    cfg = _load(args)
    series, source = _topic_series(cfg, args) if args.from_topic else (None, None)
    if args.per_entity:
        return _train_per_entity(cfg, args, series, source)
    bundle = train_bundle(cfg, model_name=args.model, entities=_entities(args.entities), out=_cli_path(args.out),
                          progress=not args.no_progress, series=series, source=source)
    print(f"bundle written: {bundle.path} (model {bundle.model_name}, window {bundle.window}, "
          f"{len(bundle.channels)} channels, sha256 {bundle.sha256[:12]})")
    selection = bundle.meta["training"].get("selection")
    if selection:  # model.name auto: the validation ranking that made the choice
        print(f"auto chose {selection['chosen']!r} by {selection['metric']}:")
        for e in selection["ranking"]:
            print(f"  {e['candidate']:<40} " + (f"vus_pr {e['vus_pr']:.3f}" if "vus_pr" in e else f"failed: {e['error']}"))
    return 0


def _topic_series(cfg, args: argparse.Namespace):
    """--from-topic: the history's rows per entity, and what was chosen on the way (logged, kept in the bundle)."""
    from .data.topic import parse_duration, parse_moment, rows_from_history
    from .io.history import read_history

    if cfg.kafka.bootstrap_servers == "embedded":
        raise StreamdetError("--from-topic needs kafka.bootstrap_servers to name the brokers that hold the history")
    since = parse_duration(args.since) if args.since else None
    until = parse_moment(args.until, time.time()) if args.until else None
    got = rows_from_history(cfg, read_history(cfg.kafka, since, args.limit, until))
    log.info("from topic %s: %d messages, %d entities, %d channels; left out: %d on too few entities %s, "
             "%d excluded %s, %d constant %s; rows dropped for missing channels: %d; rejected: %s; too short: %s",
             cfg.kafka.metrics_topic, got.messages, len(got.series), len(got.channels), len(got.rare), got.rare,
             len(got.excluded), got.excluded, len(got.constant), got.constant, got.dropped_rows, dict(got.rejected),
             got.short)
    if not got.series:
        raise StreamdetError(f"--from-topic: no entity has {2 * cfg.model.window} rows (2 x model.window) in "
                             f"{cfg.kafka.metrics_topic} ({got.messages} messages; too short: {got.short})")
    return got.series, {"dataset": f"topic:{cfg.kafka.metrics_topic}", **got.summary()}


def _train_per_entity(cfg, args: argparse.Namespace, series=None, source=None) -> int:
    from .train.per_entity import train_per_entity

    if not args.out:
        raise StreamdetError("--per-entity needs --out DIR (the bundle directory to write)")
    if args.workers < 0:
        raise StreamdetError(f"--workers {args.workers}: give a number of processes, or 0 for one per core")
    report = train_per_entity(cfg, _cli_path(args.out), model_name=args.model, entities=_entities(args.entities),
                              workers=args.workers, progress=not args.no_progress, series=series, source=source)
    print(f"bundle directory {report.out}: {len(report.trained)} trained, {len(report.kept)} up to date, "
          f"{len(report.failed)} failed")
    for entity, reason in sorted(report.failed.items()):
        print(f"  failed {entity}: {reason}")
    return 1 if report.failed else 0


def cmd_run(args: argparse.Namespace) -> int:
    from .serve.daemon import Daemon

    cfg = _load(args)
    return Daemon(cfg, bundle_path=_cli_path(args.bundle)).run()


def replay_to_kafka(cfg, split: str = "test", entities: Optional[list[str]] = None, rate: float = 0.0,
                    limit: int = 0):
    """Load the configured dataset's `split` and produce it into kafka.metrics_topic (the files' timestamps where
    they have them) -> replay.ReplayReport."""
    from .data import load_series
    from .io.producer import Producer
    from .replay import replay

    series = load_series(cfg, entities)
    arrays = {s.entity: (s.test if split == "test" else s.train) for s in series}
    times = {s.entity: t for s in series
             if (t := s.test_timestamps if split == "test" else s.train_timestamps) is not None}
    producer = Producer(cfg.kafka)
    try:
        report = replay(arrays, lambda key, value: producer.produce(cfg.kafka.metrics_topic, key, value), rate,
                        limit, timestamps=times)
        producer.flush()
    finally:
        producer.close()
    return report


def cmd_replay(args: argparse.Namespace) -> int:
    cfg = _load(args)
    _need_brokers(cfg, "replay")
    report = replay_to_kafka(cfg, split=args.split, entities=_entities(args.entities), rate=args.rate,
                             limit=args.limit)
    print(f"replayed {report.records} records of {len(report.entities)} entities to "
          f"{cfg.kafka.metrics_topic} in {report.seconds:.1f} s")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate.run import run_evaluate

    cfg = _load(args)
    summary = run_evaluate(cfg, _cli_path(args.bundle) or cfg.model.bundle, entities=_entities(args.entities),
                           out_dir=args.out, refit_every=args.refit_every, refit_rows=args.refit_rows)
    print(json.dumps(summary.get("aggregate", summary), indent=2, default=str))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .serve.demo import run_demo

    cfg = _load(args)
    return run_demo(cfg, limit=args.limit)


def cmd_demo_live(args: argparse.Namespace) -> int:
    from .io.collectd import missing
    from .serve.livedemo import quiet_logs, run_live, summary

    reason = missing()
    if reason is not None:
        raise StreamdetError(f"demo-live needs collectd: {reason}")
    cfg = _load(args)
    quiet_logs()
    summary(run_live(cfg, baseline_s=args.baseline, load_s=args.load, settle_s=args.settle))
    return 0


def cmd_alertmanager(args: argparse.Namespace) -> int:
    from .alertmanager.main import run_bridge

    cfg = _load(args)
    _need_brokers(cfg, "alertmanager")
    return run_bridge(cfg)


def cmd_alerts(args: argparse.Namespace) -> int:
    from .alertmanager.table import tail
    from .io.readers import TopicTail

    cfg = _load(args)
    _need_brokers(cfg, "alerts")
    with TopicTail(cfg.kafka, cfg.kafka.alerts_topic) as topic:
        tail(topic.poll, sys.stdout, limit=args.limit, idle_s=args.idle)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .models.registry import names, preset_names

    for name in names():
        print(f"{name:22s} presets: {', '.join(preset_names(name))}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamdet", description="Streaming multivariate anomaly detection.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_: str, positional: bool = False):
        p = sub.add_parser(name, help=help_, description=help_)
        _config_args(p, positional)
        p.set_defaults(func=func)
        return p

    p = add("run", cmd_run, "run the daemon until SIGTERM/SIGINT")
    p.add_argument("--bundle", help="model bundle (default: model.bundle)")
    p = add("train", cmd_train, "train, calibrate and export a model bundle")
    p.add_argument("--model", help="registry name (default: model.name)")
    p.add_argument("--entities", help="comma-separated entities (default: data.entities)")
    p.add_argument("--out", help="bundle path (default: model.bundle); a directory with --per-entity")
    p.add_argument("--per-entity", action="store_true",
                   help="write a bundle directory: a fleet default.pt plus one bundle per entity (resumable)")
    p.add_argument("--workers", type=int, default=0, help="--per-entity: parallel processes (default: cores)")
    p.add_argument("--from-topic", action="store_true",
                   help="train on the metrics topic's history (any input.format) instead of data.dataset")
    p.add_argument("--since", metavar="DURATION", help="--from-topic: only the last DURATION (90s, 10m, 2h, 1d)")
    p.add_argument("--until", metavar="WHEN", help="--from-topic: only messages up to WHEN, an ISO 8601 time "
                   "(2026-12-02T16:08:30Z) or a DURATION ago: leave out a recent incident or the training's own load")
    p.add_argument("--limit", type=int, default=5_000_000, help="--from-topic: read at most N messages")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p = add("replay", cmd_replay, "produce dataset rows into the metrics topic as JSON keyed by entity")
    p.add_argument("--split", choices=("test", "train"), default="test")
    p.add_argument("--entities", help="comma-separated entities (default: data.entities)")
    p.add_argument("--rate", type=float, default=0.0, help="records per second in total (0 = as fast as possible)")
    p.add_argument("--limit", type=int, default=0, help="at most N records per entity (0 = all)")
    p = add("evaluate", cmd_evaluate, "backtest a bundle on the test split through the live pipeline stages")
    p.add_argument("--bundle", help="model bundle (default: model.bundle)")
    p.add_argument("--entities", help="comma-separated entities (default: data.entities)")
    p.add_argument("--out", default="evaluation", help="report folder")
    p.add_argument("--refit-every", type=int, default=0, metavar="N",
                   help="retrain each entity's model after every N test rows and hot-swap it in (scheduled "
                        "retraining, replayed; 0 = never)")
    p.add_argument("--refit-rows", type=int, default=0, metavar="M",
                   help="with --refit-every: train on the latest M rows (0 = as many as the train split)")
    p = add("demo", cmd_demo, "train if needed, start an embedded broker, replay, run the daemon, print alerts")
    p.add_argument("--limit", type=int, default=0, help="at most N test records per entity (0 = all)")
    p = add("demo-live", cmd_demo_live, "collectd on this machine -> baseline -> train -> daemon -> CPU load -> "
                                         "alerts (needs collectd-core; ends by itself)")
    p.add_argument("--baseline", type=float, default=120.0, help="seconds of baseline to train on")
    p.add_argument("--load", type=float, default=30.0, help="seconds of CPU load")
    p.add_argument("--settle", type=float, default=20.0, help="seconds of live scoring before the load")
    add("alertmanager", cmd_alertmanager, "post the alerts topic to Alertmanager (API v2) until SIGTERM/SIGINT")
    p = add("alerts", cmd_alerts, "tail the alerts topic as a table (from its beginning)")
    p.add_argument("--limit", type=int, default=0, help="stop after N alerts (0 = never)")
    p.add_argument("--idle", type=float, default=0.0, help="stop after S seconds without a new alert (0 = never)")
    add("check-config", cmd_check_config, "validate a config and print the resolved values", positional=True)
    p = sub.add_parser("models", help="list the registered detectors")
    p.set_defaults(func=cmd_models)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except StreamdetError as exc:
        print(f"streamdet: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
