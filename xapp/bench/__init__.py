"""Measurements, each an ``argo-xapp bench NAME`` subcommand (``xapp.cli.BENCHES``) with ``main(argv)``: latency,
accuracy, retrieval, answers, engine, load, remote and tracing-overhead. What they share (questions, the evaluation
set, statistics, CSV/JSON output) is :mod:`xapp.bench.common`; figures are :mod:`xapp.bench.plots` (the ``bench``
extra). Also here, for tests and benches only: :mod:`xapp.bench.synthetic` (random-weight Qwen2 checkpoints) and
:mod:`xapp.bench.tracer_switch` (tracing switched on and off in one process)."""
