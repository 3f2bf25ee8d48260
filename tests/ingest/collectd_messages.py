"""collectd write_kafka messages made up, seeded, in the shape of the real capture in ../shared/data/agents: so that the
tests of the collectd path run in a fresh clone without the shared data.

The shape follows that capture (collectd 5.12, `Format JSON`, `StoreRates true`, `Interval 1`, one idle 2-core host):
one value list per message; the same plugins, instances and types, hence the same 143 channels; gauges as levels that
drift a little or stay put; derive values as per-second rates whose first sample is `null`. What varies and what stays
constant matches the capture where the tests rely on it: cpu, load and memory move; the ifb0/ifb1/eth0 interfaces,
swap and most error counters are constant zeros. 33 intervals by default, as in the capture (with 20, training on them
leaves too few validation windows to calibrate).
"""

from __future__ import annotations

import random

import orjson

START = 1795000000.0  # epoch seconds of the first sample (November 2026, before the real capture)

# (type_instance, start level, drift per second): drift 0 is a constant channel
MEMORY = [("free", 22148063232, 2e5), ("used", 567226368, 2e5), ("buffered", 26890240, 4096),
          ("cached", 2198327296, 1e4), ("slab_recl", 298217472, 4096), ("slab_unrecl", 37785600, 4096)]
VMEM_MOVING = {"free_pages": 3551933, "zone_inactive_anon": 117715, "zone_active_anon": 378,
               "zone_inactive_file": 321313, "zone_active_file": 219694, "zone_write_pending": 139,
               "inactive_anon": 117715, "active_anon": 378, "inactive_file": 321313, "active_file": 219694,
               "slab_reclaimable": 72807, "slab_unreclaimable": 9225, "anon_pages": 118565, "mapped": 31957,
               "file_pages": 543266, "dirty": 138, "kernel_stack": 1852, "page_table_pages": 887,
               "dirty_threshold": 1180729, "dirty_background_threshold": 589643}
VMEM_STILL = {"free_pages_blocks": 3277312, "zone_unevictable": 2626, "mlock": 2386, "zspages": 0, "free_cma": 0,
              "unevictable": 2626, "isolated_anon": 0, "isolated_file": 0, "writeback": 0, "shmem": 2214,
              "shmem_hugepages": 0, "shmem_pmdmapped": 0, "file_hugepages": 15, "file_pmdmapped": 0,
              "anon_transparent_hugepages": 0, "vmscan_write": 0, "vmscan_immediate_reclaim": 26513,
              "throttled_written": 0, "kernel_misc_reclaimable": 0, "foll_pin_acquired": 0, "foll_pin_released": 0,
              "sec_page_table_pages": 0, "iommu_pages": 0, "swapcached": 0, "hugetlb": 0, "balloon_pages": 0,
              "kernel_file_pages": 0, "memmap_pages": 0, "memmap_boot_pages": 98304, "unstable": 0}
CPU_STATES = {"user": 1.0, "system": 1.0, "wait": 0.0, "nice": 0.0, "interrupt": 0.0, "softirq": 0.3,
              "steal": 0.0, "idle": 97.7}  # mean percent of one core


def value_lists() -> list[dict]:
    """Every value list the agent sends each interval, in the capture's order: plugin, instance, type, names, types,
    and per data source a model ('gauge', level, drift) or ('derive', mean rate, spread)."""
    out = [_vl("memory", "", "memory", name, [("gauge", level, drift)]) for name, level, drift in MEMORY]
    for iface in ("lo", "ifb0", "ifb1", "eth0"):
        busy = iface == "lo"  # loopback traffic of an idle host; the other links are quiet
        for kind, rate in (("if_packets", 90.0), ("if_octets", 30000.0), ("if_errors", 0), ("if_dropped", 0)):
            out.append(_vl("interface", iface, kind, "", [("derive", rate if busy else 0, rate / 5 if busy else 0)]
                           * 2, ["rx", "tx"]))
    out += [_vl("df", "dev-shm", "df_complex", name, [("gauge", level, 0)])
            for name, level in (("free", 25276510208), ("reserved", 0), ("used", 0))]
    out += [_vl("df", "root", "df_complex", name, [("gauge", level, drift)])
            for name, level, drift in (("free", 80031739904, -8192), ("reserved", 161608880128, 0),
                                       ("used", 28912553984, 8192))]
    out += [_vl("swap", "", "swap", name, [("gauge", 0, 0)]) for name in ("used", "free", "cached")]
    out += [_vl("swap", "", "swap_io", name, [("derive", 0, 0)]) for name in ("in", "out")]
    out += [_vl("vmem", "", "vmpage_number", name, [("gauge", level, max(1, level // 2000))])
            for name, level in VMEM_MOVING.items()]
    out += [_vl("vmem", "", "vmpage_number", name, [("gauge", level, 0)]) for name, level in VMEM_STILL.items()]
    out += [_vl("vmem", "", "vmpage_action", name, [("derive", 20.0, 10.0)]) for name in ("dirtied", "written")]
    out.append(_vl("vmem", "", "vmpage_faults", "", [("derive", 90.0, 30.0), ("derive", 0, 0)], ["minflt", "majflt"]))
    out.append(_vl("vmem", "", "vmpage_io", "memory", [("derive", 0, 0), ("derive", 30.0, 60.0)], ["in", "out"]))
    out.append(_vl("vmem", "", "vmpage_io", "swap", [("derive", 0, 0)] * 2, ["in", "out"]))
    out += [_vl("processes", "", "ps_state", name, [("gauge", level, drift)])
            for name, level, drift in (("running", 2, 1), ("sleeping", 35, 0), ("zombies", 0, 0), ("stopped", 0, 0),
                                       ("paging", 0, 0), ("blocked", 0, 0))]
    out.append(_vl("processes", "", "fork_rate", "", [("derive", 40.0, 4.0)]))
    out.append(_vl("load", "", "load", "", [("gauge", 0.6, 0.03), ("gauge", 0.46, 0.01), ("gauge", 0.4, 0.005)],
                   ["shortterm", "midterm", "longterm"]))
    for cpu in ("0", "1"):
        out += [_vl("cpu", cpu, "cpu", state, [("derive", mean, min(mean, 1.0))]) for state, mean in CPU_STATES.items()]
    for kind, names, rate in (("disk_octets", ["read", "write"], 60000.0), ("disk_ops", ["read", "write"], 0.5),
                              ("disk_time", ["read", "write"], 0.5), ("disk_merged", ["read", "write"], 0.5),
                              ("disk_io_time", ["io_time", "weighted_io_time"], 0.5)):
        out.append(_vl("disk", "vda", kind, "", [("derive", 0, 0), ("derive", rate, rate)], names))
    return out


def _vl(plugin: str, instance: str, type_: str, type_instance: str, models: list[tuple], names=("value",)) -> dict:
    return {"plugin": plugin, "plugin_instance": instance, "type": type_, "type_instance": type_instance,
            "dsnames": list(names), "models": models}


def collectd_messages(seconds: int = 33, host: str = "host-a", seed: int = 0) -> list[bytes]:
    """`seconds` intervals of every value list, one JSON message per value list, as write_kafka sends them."""
    rng = random.Random(seed)
    lists = value_lists()
    levels = [[float(level) for kind, level, _ in vl["models"]] for vl in lists]
    out = []
    for step in range(seconds):
        now = round(START + step + rng.uniform(0.85, 0.86), 3)
        for vl, level in zip(lists, levels):
            values = [_value(model, level, k, step, rng) for k, model in enumerate(vl["models"])]
            out.append(orjson.dumps([{
                "values": values, "dstypes": [model[0] for model in vl["models"]], "dsnames": vl["dsnames"],
                "time": now, "interval": 1.0, "host": host, "plugin": vl["plugin"],
                "plugin_instance": vl["plugin_instance"], "type": vl["type"], "type_instance": vl["type_instance"]}]))
    return out


def _value(model: tuple, level: list[float], k: int, step: int, rng: random.Random):
    """A gauge's level after a random step of up to `drift`; a derive's rate around its mean (never negative), or
    null on the first interval as collectd sends before it has two readings."""
    kind, start, spread = model
    if kind == "gauge":
        if spread and step:
            level[k] = max(0.0, level[k] + rng.uniform(-1.0, 1.0) * spread)
        return level[k] if isinstance(start, float) else int(level[k])
    if step == 0:
        return None
    return max(0.0, start + rng.gauss(0.0, spread)) if spread else 0
