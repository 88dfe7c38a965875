"""Results made elsewhere, as evalsvc runs: lm-eval ``--log_samples`` outputs and inspect_ai eval logs.

Each reader turns a file into ``ImportedRun`` objects (``imported``) without touching the store, so a file
that does not parse is refused before anything is written; ``store.record`` then writes each one as a
succeeded run of an imported variant, with per-case results and metric points, in one transaction.
Gate, drift and dashboard read them like any run.
"""
