"""The parsed-array cache: hits return the parsed arrays, changed files are parsed again, failures cost only time."""

from __future__ import annotations

import numpy as np

from streamdet.data.cache import cached_parse
from streamdet.data.csvread import read_numeric_csv


class CountingParser:
    """The real CSV parser, counting how often the cache had to call it."""

    def __init__(self):
        self.calls = 0

    def __call__(self, path):
        self.calls += 1
        names, values, _ = read_numeric_csv(path)
        return names, values


def test_second_read_is_a_hit_and_a_changed_file_is_parsed_again(tmp_path, private_cache):
    source = tmp_path / "m.csv"
    source.write_text("a,b\n1.5,2\n3,4.25\n")
    parse = CountingParser()
    first = cached_parse(source, parse)
    second = cached_parse(source, parse)
    assert parse.calls == 1 and len(list(private_cache.glob("m.csv-*.npz"))) == 1
    assert second[0] == ["a", "b"] and second[1].dtype == np.float32
    np.testing.assert_array_equal(second[1], first[1])
    source.write_text("a,b\n1.5,2\n3,4.25\n7,8\n")
    names, values = cached_parse(source, parse)
    assert parse.calls == 2 and values.shape == (3, 2) and values[2].tolist() == [7.0, 8.0]


def test_off_writes_nothing_and_an_unwritable_folder_still_parses(tmp_path, monkeypatch):
    source = tmp_path / "m.csv"
    source.write_text("a\n1\n2\n")
    monkeypatch.setenv("STREAMDET_CACHE", "off")
    parse = CountingParser()
    cached_parse(source, parse), cached_parse(source, parse)
    assert parse.calls == 2 and sorted(p.name for p in tmp_path.iterdir()) == ["m.csv"]
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("STREAMDET_CACHE", str(blocker / "cache"))
    names, values = cached_parse(source, parse)
    assert names == ["a"] and values[:, 0].tolist() == [1.0, 2.0]


def test_a_corrupt_entry_is_replaced(tmp_path, private_cache):
    source = tmp_path / "m.csv"
    source.write_text("a\n1\n")
    parse = CountingParser()
    cached_parse(source, parse)
    (entry,) = private_cache.glob("*.npz")
    entry.write_bytes(b"not a zip file")
    assert cached_parse(source, parse)[1].tolist() == [[1.0]] and parse.calls == 2
    assert cached_parse(source, parse)[1].tolist() == [[1.0]] and parse.calls == 2
