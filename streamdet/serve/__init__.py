"""The daemon (`streamdet run`): the only place, with cli.py, that wires Kafka and Prometheus adapters to the stages.

daemon.py (start-up, the loop, shutdown) -> delivery.py (publish and the one ordered commit) with ledger.py (offsets
and per-entity bookkeeping), state.py (checkpoints), rebalance.py, reload.py and backoff.py (broker outages).
"""
