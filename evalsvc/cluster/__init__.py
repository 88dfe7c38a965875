"""Past one machine: a firing's variants as Ray tasks on a cluster (executor type ray; docs/cluster.md).

resources (what each variant's task asks Ray for) -> validate (before anything is submitted) ->
task (inside a worker: today's runner for one variant and slot, writing to the store) -> executor (the driver:
submit, wait with timeouts, collect the outcome summaries) ; jobs (`evalsvc serve` submits a firing as a Ray Job).
"""
