"""Run a real collectd (Debian's `collectd-core`) writing this machine's metrics to Kafka: `make demo-live` and the
end-to-end test use it, so the agent is the one operators run, not an imitation.

collectd's write_kafka plugin links librdkafka. Debian's own build (2.0.2) fails the API-version handshake with the
embedded broker (a real Kafka accepts it), so collectd is started with LD_LIBRARY_PATH pointing at a folder holding
a `librdkafka.so.1` link to the librdkafka that the confluent-kafka wheel ships.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

from ..errors import StreamdetError

log = logging.getLogger(__name__)

COLLECTD = "/usr/sbin/collectd"
PLUGIN_DIR = "/usr/lib/collectd"
TYPES_DB = "/usr/share/collectd/types.db"
PLUGINS = ("cpu", "memory", "load", "interface")  # interface: all but the loopback, which carries Kafka's own traffic
PR_SET_PDEATHSIG = 1
INSTALL_HINT = "apt-get install -y collectd-core libyajl2 stress-ng"

CONFIG = """Hostname "{host}"
FQDNLookup false
Interval {interval}
BaseDir "{base}"
PIDFile "{base}/collectd.pid"
PluginDir "{plugin_dir}"
TypesDB "{types_db}"
LoadPlugin logfile
<Plugin logfile>
  LogLevel info
  File "{base}/collectd.log"
</Plugin>
{plugins}
<Plugin interface>
  Interface "lo"
  IgnoreSelected true
</Plugin>
LoadPlugin write_kafka
<Plugin write_kafka>
  Property "metadata.broker.list" "{bootstrap}"
  <Topic "{topic}">
    Format JSON
    Key "{host}"
  </Topic>
</Plugin>
"""


def missing() -> Optional[str]:
    """Why collectd cannot run here (None when it can): the reason names the package to install."""
    if not Path(COLLECTD).exists():
        return f"{COLLECTD} not found ({INSTALL_HINT})"
    if not Path(PLUGIN_DIR, "write_kafka.so").exists():
        return f"{PLUGIN_DIR}/write_kafka.so not found ({INSTALL_HINT})"
    if ctypes.util.find_library("yajl") is None:  # write_kafka links it; collectd-core only recommends it
        return f"libyajl.so.2 not found ({INSTALL_HINT})"
    if wheel_librdkafka() is None:
        return "confluent-kafka's bundled librdkafka (confluent_kafka.libs/librdkafka-*.so.1) not found"
    return None


def wheel_librdkafka() -> Optional[str]:
    """The librdkafka shipped in the confluent-kafka wheel (found without importing the client)."""
    spec = importlib.util.find_spec("confluent_kafka")
    if spec is None or spec.origin is None:
        return None
    site = Path(spec.origin).resolve().parent.parent
    found = sorted(glob.glob(str(site / "confluent_kafka.libs" / "librdkafka-*.so.1")))
    return found[0] if found else None


class CollectdAgent:
    """`with CollectdAgent(bootstrap, topic, host) as agent:` runs collectd in the foreground until the block ends."""

    def __init__(self, bootstrap: str, topic: str, host: str, interval_s: float = 1.0):
        reason = missing()
        if reason is not None:
            raise StreamdetError(f"collectd cannot run: {reason}")
        self.bootstrap, self.topic, self.host, self.interval_s = bootstrap, topic, host, interval_s
        self.base = Path(tempfile.mkdtemp(prefix="streamdet-collectd-"))
        self.proc: Optional[subprocess.Popen] = None

    def __enter__(self) -> "CollectdAgent":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        libs = self.base / "lib"
        libs.mkdir()
        (libs / "librdkafka.so.1").symlink_to(wheel_librdkafka())
        config = self.base / "collectd.conf"
        config.write_text(CONFIG.format(host=self.host, interval=self.interval_s, base=self.base,
                                        plugin_dir=PLUGIN_DIR, types_db=TYPES_DB, bootstrap=self.bootstrap,
                                        topic=self.topic, plugins="\n".join(f"LoadPlugin {p}" for p in PLUGINS)))
        env = dict(os.environ, LD_LIBRARY_PATH=f"{libs}:{os.environ.get('LD_LIBRARY_PATH', '')}".rstrip(":"))
        self.proc = subprocess.Popen([COLLECTD, "-f", "-C", str(config)], env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        log.info("collectd started pid=%d host=%s topic=%s interval_s=%g", self.proc.pid, self.host, self.topic,
                 self.interval_s)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        path = self.base / "collectd.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        shutil.rmtree(self.base, ignore_errors=True)


def _die_with_parent() -> None:
    """In the child before exec: Linux sends it SIGTERM when the process that started it dies, so a killed test or
    demo never leaves collectd running (prctl PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
