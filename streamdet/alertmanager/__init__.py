"""On-call out: the alerts topic -> Alertmanager (bridge.py), the translation of an alert into what the paged person
reads (translate.py), the open alerts a stateless bridge re-learns from the topic (openalerts.py), and the terminal
table of `streamdet alerts` (table.py)."""
