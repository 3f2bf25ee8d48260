#!/usr/bin/env python3
"""Download the Server Machine Dataset (SMD) and convert it to streamdet's data layout.

SMD is published by the OmniAnomaly authors (Su et al., KDD 2019) as plain text files in their GitHub repository:
ServerMachineDataset/{train,test,test_label,interpretation_label}/machine-X-Y.txt (comma-separated floats, no
header). streamdet reads every dataset from one layout (see README, "Getting the data"):

    smd/entities.csv                       entity,train_rows,test_rows,dims,test_anomaly_points,test_anomaly_ratio
    smd/machine-X-Y.train.csv.gz           header row of metric names, then one row per minute
    smd/machine-X-Y.test.csv.gz
    smd/machine-X-Y.test_label.csv.gz      header `label`, one 0/1 per test row
    smd/machine-X-Y.interpretation_label.txt   copied as is (`start-end:d1,d2`, 1-based channels)

Usage (needs internet access):

    python tools/download_smd.py --out /path/to/data/smd            # all 28 machines
    python tools/download_smd.py --out /path/to/data/smd --machines machine-1-1,machine-1-2
    export STREAMDET_DATA=/path/to/data

`--raw DIR` converts an already downloaded copy of ServerMachineDataset/ instead (no network).
"""

from __future__ import annotations

import argparse
import gzip
import sys
import urllib.request
from pathlib import Path

BASE_URL = "https://raw.githubusercontent.com/NetManAIOps/OmniAnomaly/master/ServerMachineDataset"
PARTS = ("train", "test", "test_label", "interpretation_label")
MACHINES = [f"machine-1-{i}" for i in range(1, 9)] + [f"machine-2-{i}" for i in range(1, 10)] + \
           [f"machine-3-{i}" for i in range(1, 12)]
# Informal metric names (OmniAnomaly issue #22); the publishers never named the 38 columns.
CHANNELS = ["cpu_r", "load_1", "load_5", "load_15", "mem_shmem", "mem_u", "mem_u_e", "total_mem", "disk_q", "disk_r",
            "disk_rb", "disk_svc", "disk_u", "disk_w", "disk_wa", "disk_wb", "si", "so", "eth1_fi", "eth1_fo",
            "eth1_pi", "eth1_po", "tcp_tw", "tcp_use", "active_opens", "curr_estab", "in_errs", "in_segs",
            "listen_overflows", "out_rsts", "out_segs", "passive_opens", "retransegs", "tcp_timeouts", "udp_in_dg",
            "udp_out_dg", "udp_rcv_buf_errs", "udp_snd_buf_errs"]


def download(raw_dir: Path, machines: list[str]) -> None:
    """Fetch the four text files of every machine into raw_dir/PART/MACHINE.txt (skips files already there)."""
    for machine in machines:
        for part in PARTS:
            target = raw_dir / part / f"{machine}.txt"
            if target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            url = f"{BASE_URL}/{part}/{machine}.txt"
            print(f"downloading {url}", file=sys.stderr)
            try:
                with urllib.request.urlopen(url, timeout=60) as response:
                    target.write_bytes(response.read())
            except OSError as exc:  # no network, DNS, HTTP error: one line, and what was fetched stays
                raise SystemExit(f"cannot download {url}: {exc} (files fetched so far stay in {raw_dir}; run again "
                                 "to resume)") from None


def _rows(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _write_gz(path: Path, header: str, rows: list[str]) -> None:
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:  # reproducible bytes
        out.write((header + "\n" + "\n".join(rows) + "\n").encode())


def convert(raw_dir: Path, out_dir: Path, machines: list[str]) -> list[str]:
    """Convert raw_dir/PART/MACHINE.txt into the layout in out_dir; returns the entities.csv lines written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    index = ["entity,train_rows,test_rows,dims,test_anomaly_points,test_anomaly_ratio"]
    for machine in machines:
        train, test = _rows(raw_dir / "train" / f"{machine}.txt"), _rows(raw_dir / "test" / f"{machine}.txt")
        labels = [str(int(float(v))) for v in _rows(raw_dir / "test_label" / f"{machine}.txt")]
        dims = len(train[0].split(","))
        if len(labels) != len(test):
            raise SystemExit(f"{machine}: {len(labels)} labels for {len(test)} test rows")
        if any(len(r.split(",")) != dims for r in train + test):
            raise SystemExit(f"{machine}: rows of different widths")
        header = ",".join(CHANNELS if dims == len(CHANNELS) else [f"m{i:02d}" for i in range(dims)])
        _write_gz(out_dir / f"{machine}.train.csv.gz", header, train)
        _write_gz(out_dir / f"{machine}.test.csv.gz", header, test)
        _write_gz(out_dir / f"{machine}.test_label.csv.gz", "label", labels)
        interp = raw_dir / "interpretation_label" / f"{machine}.txt"
        if interp.exists():
            (out_dir / f"{machine}.interpretation_label.txt").write_text(interp.read_text())
        anomalous = sum(v == "1" for v in labels)
        index.append(f"{machine},{len(train)},{len(test)},{dims},{anomalous},{anomalous / len(test):.6f}")
    (out_dir / "entities.csv").write_text("\n".join(index) + "\n")
    return index[1:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="the smd/ folder to write")
    parser.add_argument("--machines", default=",".join(MACHINES), help="comma-separated machine names")
    parser.add_argument("--raw", type=Path, help="an already downloaded ServerMachineDataset/ (skip downloading)")
    args = parser.parse_args(argv)
    machines = [m.strip() for m in args.machines.split(",") if m.strip()]
    raw_dir = args.raw or args.out / "_raw"
    if not args.raw:
        download(raw_dir, machines)
    written = convert(raw_dir, args.out, machines)
    print(f"wrote {len(written)} machines to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
