"""The statistics evalsvc's verdicts rest on: one module per family of methods, each naming its references.

- ``comparison``: a paired comparison, its interval, p-values and verdict; margins.
- ``binary``: pass/fail pairs (Tango's score interval and test, McNemar).
- ``bootstrap``: continuous scores and quantiles (paired BCa bootstrap, expanded for small n).
- ``power``: the paired n that decides (Nam, Connor, Miller).
- ``multiplicity``: several comparisons at once (Holm, weighted Holm, intersection-union).
- ``aggregate``: one run's summaries with intervals (Wilson, t, order statistics).
- ``speed``: latency and throughput summaries of a run.
- ``drift`` and ``drift_residuals``: a series' own shifts (self-starting CUSUM, fixed-case design effects).
- ``ratings``: arena battles (Bradley-Terry with a cluster bootstrap, win rates).
- ``group_sequential``: boundaries for looks at information fractions (Lan-DeMets spending, Armitage-McPherson-Rowe).
- ``sequential``: a paired comparison decided at group-sequential looks, with repeated confidence intervals.
- ``divergence``: top-k KL lower bound, same output and first divergence of a candidate's answers from its baseline's.
- ``betting``: anytime-valid betting e-processes and confidence sequences on paired differences (Waudby-Smith, Ramdas).

The decisions built on these (which comparisons decide a gate, how suites combine) live in ``evalsvc.verdicts``.
This module imports nothing, so importing one method never loads the others.
"""
