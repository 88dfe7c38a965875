"""The service layer: what evalsvc does, whoever asks (the CLI, the scheduler, the dashboard).

- ``runs``: run suites against variants and compare each with its family baseline.
- ``gate``: the pre-deploy gate, from missing runs to the exit code.
- ``drift``: the state of each metric series.
- ``schedule``: one firing of a schedule (runs, comparisons, alerts).
- ``arena``: pairwise battles and their leaderboard.
- ``compare``: two variants compared by name from the store alone (read-only; the dashboard's).
"""
