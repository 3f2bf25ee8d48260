"""Data from any folder in the shared layout and CSV files with a timestamp column (ISO 8601 or epoch seconds):
the times become record timestamps in replays (on the real broker) and backtests."""

from __future__ import annotations

import gzip
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from streamdet.config import load_config
from streamdet.data import list_entities, load_series
from streamdet.errors import DataError
from tests.integration.helpers import read_topic

START = 1_796_000_000.0


def write_gz(path: Path, text: str) -> None:
    path.write_bytes(gzip.compress(text.encode()))


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_folder(root: Path, name="myfleet", entities=("web-1", "web-2"), rows=(400, 160), time_column=1) -> Path:
    """A dataset in the shared layout whose CSVs carry an ISO time column at position `time_column`."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "entities.csv").write_text("entity,train_rows,test_rows\n" +
                                         "".join(f"{e},{rows[0]},{rows[1]}\n" for e in entities))
    rng = np.random.default_rng(0)
    for e in entities:
        for split, n, offset in (("train", rows[0], 0), ("test", rows[1], rows[0])):
            header = ["cpu", "mem", "net"]
            header.insert(time_column, "timestamp")
            lines = [",".join(header)]
            for i in range(n):
                cells = [f"{v:.4f}" for v in np.sin(np.arange(3) + (offset + i) / 7) + rng.normal(0, 0.05, 3)]
                cells.insert(time_column, iso(START + 60 * (offset + i)))
                lines.append(",".join(cells))
            write_gz(folder / f"{e}.{split}.csv.gz", "\n".join(lines) + "\n")
        labels = np.zeros(rows[1], dtype=int)
        labels[100:110] = 1
        write_gz(folder / f"{e}.test_label.csv.gz", "label\n" + "\n".join(map(str, labels)) + "\n")
    return folder


def config(root: Path, *extra: str):
    return load_config(None, [f"data.root={root}", "data.dataset=myfleet", *extra])


def test_any_layout_folder_is_a_dataset_and_its_time_column_gives_timestamps(tmp_path):
    make_folder(tmp_path)
    cfg = config(tmp_path)
    assert list_entities(cfg) == ["web-1", "web-2"]
    [s, _] = load_series(cfg)
    assert s.channels == ["cpu", "mem", "net"] and s.train.shape == (400, 3) and s.test.shape == (160, 3)
    assert s.train_timestamps[0] == START and s.test_timestamps[0] == START + 60 * 400
    assert np.all(np.diff(s.test_timestamps) == 60.0) and int(s.test_labels.sum()) == 10


def test_csv_files_with_an_epoch_time_column_named_in_the_config(tmp_path):
    for split, n in (("train", 50), ("test", 20)):
        lines = ["when,cpu,mem"] + [f"{START + i},{i * 0.1},{i * 0.2}" for i in range(n)]
        (tmp_path / f"{split}.csv").write_text("\n".join(lines) + "\n")
    cfg = load_config(None, ["data.dataset=csv", f"data.csv_train={tmp_path / 'train.csv'}",
                             f"data.csv_test={tmp_path / 'test.csv'}", "data.timestamp_column=when"])
    [s] = load_series(cfg)
    assert s.channels == ["cpu", "mem"] and s.test_timestamps.tolist() == [START + i for i in range(20)]
    missing = load_config(None, ["data.dataset=csv", f"data.csv_train={tmp_path / 'train.csv'}",
                                 f"data.csv_test={tmp_path / 'test.csv'}", "data.timestamp_column=time"])
    with pytest.raises(DataError, match=r"train.csv: data.timestamp_column 'time' is not in the header \(when, cpu"):
        load_series(missing)


def test_bad_time_cells_and_folders_outside_the_layout_are_named(tmp_path):
    folder = make_folder(tmp_path)
    write_gz(folder / "web-2.test.csv.gz", "cpu,timestamp,mem,net\n1,2026-11-30T12:00:00Z,1,1\n1,noon,1,1\n")
    with pytest.raises(DataError, match=r"web-2.test.csv.gz: line 3, column 'timestamp': 'noon' is neither"):
        load_series(config(tmp_path))
    (tmp_path / "loose").mkdir()
    with pytest.raises(DataError, match="not a dataset in the shared layout"):
        list_entities(load_config(None, [f"data.root={tmp_path}", "data.dataset=loose"]))
    with pytest.raises(DataError, match="is not a folder under data.root"):
        list_entities(load_config(None, [f"data.root={tmp_path / 'myfleet'}", "data.dataset=../loose"]))


def test_replay_sends_the_files_timestamps_to_the_broker(tmp_path, broker, names):
    import dataclasses

    from streamdet.cli import replay_to_kafka

    make_folder(tmp_path)
    topic = names["metrics"]
    cfg = config(tmp_path, f"kafka.metrics_topic={topic}", "kafka.partitions=1")
    cfg = dataclasses.replace(cfg, kafka=cfg.kafka.at(broker.bootstrap))
    report = replay_to_kafka(cfg, split="test", entities=["web-1"], limit=30)
    assert report.records == 30
    got = read_topic(broker.bootstrap, topic, lambda m: len(m) >= 30, 30)
    assert [m["ts"] for m in got] == [START + 60 * (400 + i) for i in range(30)]


def test_evaluate_scores_records_at_the_files_times(tmp_path):
    """Backtest records carry the file's times: the same rows with times running backwards are rejected as late."""
    from streamdet.evaluate.backtest import replay_entity
    from streamdet.train import train_bundle

    make_folder(tmp_path)
    cfg = config(tmp_path, "model.name=lstm_ae", "model.preset=tiny", "model.window=8", "scoring.stride=4",
                 "train.epochs=1", "train.device=cpu", f"model.bundle={tmp_path / 'b.pt'}")
    bundle = train_bundle(cfg, progress=False)
    s = load_series(cfg, ["web-1"])[0]
    forwards = replay_entity(cfg, bundle, s.entity, s.test, timestamps=s.test_timestamps)
    backwards = replay_entity(cfg, bundle, s.entity, s.test, timestamps=s.test_timestamps[::-1].copy())
    assert not np.isnan(forwards.scores).any()
    late = int(np.isnan(backwards.scores).sum())  # allowed_lateness 300 s: only the first 6 rows (5 min) pass
    assert late == len(s.test) - 6
