"""The state changelog as snapshots and deltas (issue 22; docs/reliability.md, "State checkpoints").

A full checkpoint per touched entity per commit wrote about five times the input's bytes (the whole window and
threshold state again every 5 s). Each checkpoint now carries what changed since the entity's previous one
(delta.py), with a full snapshot only when needed (writer.py has the rule), in a compact binary form (codec.py);
a restore folds snapshot + deltas back into exactly the state a full checkpoint would have held (fold.py).

Why these keys: the snapshot keeps the entity's key (b"<entity>") and the n-th delta after it is keyed
b"<entity>\\x00<n>". Compaction keeps the latest record per key, and every record a restore needs is the latest of
its key: the snapshot until the next snapshot replaces it, delta n until the next chain reaches n again. So no
compaction state, partial or complete, can drop a needed record or leave one in a wrong order (the fold orders
by generation and index, never by offset: keys of one entity may sit in different changelog partitions). Delta
keys are reused by every chain, so an entity holds at most 1 + max_deltas keys: no tombstones are needed to keep
the compacted log bounded, and none can race a newer record when the producer re-sends after an outage. Records of
an older chain are recognised by their generation (a counter carried across owners) and chain id, and ignored.

Considered and not chosen: a snapshot topic beside a delta topic needs a second compacted topic per deployment,
and the two topics' reads are not ordered relative to each other, so a restore needs the same generation checks
anyway; keys with ever-growing sequence numbers need a tombstone for every delta (as many extra records again).
"""

from .codec import StateError
from .fold import ChangelogFold, Restored
from .writer import ChangelogWriter, History

__all__ = ["ChangelogFold", "ChangelogWriter", "History", "Restored", "StateError"]
