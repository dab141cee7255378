"""Benchmarks of the serving stack: ``python -m benchmarks.run`` (what ``make bench`` runs).

- :mod:`benchmarks.stack`: start Triton (the project's launcher) and the gateway on free ports;
- :mod:`benchmarks.perf`: perf_analyzer (gRPC streaming) sweeps over the synthesis models;
- :mod:`benchmarks.load`: the project's asyncio load tool (gateway and direct Triton);
- :mod:`benchmarks.stats`: percentiles, playback underruns and the machine-independent ratios;
- :mod:`benchmarks.report`: ``results.json``, ``results.md`` and ``results.png``;
- :mod:`benchmarks.profile`: the engine in-process with timers around each stage.

See BENCHMARKS.md for what every figure means.
"""
