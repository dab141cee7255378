"""Benchmarks of the serving stack: ``python -m benchmarks.run`` (what ``make bench`` runs).

- :mod:`benchmarks.stack`: start Triton (the project's launcher) and the gateway on free ports;
- :mod:`benchmarks.load`: the project's asyncio load tool (gateway and direct Triton);
- :mod:`benchmarks.perf`: perf_analyzer (gRPC streaming) runs over the synthesis models;
- :mod:`benchmarks.stats`: percentiles, playback underruns and the machine-independent ratios;
- :mod:`benchmarks.tritonstats`, :mod:`benchmarks.cpu`: Triton's statistics and server CPU time per level;
- :mod:`benchmarks.report`: ``results.json``, ``results.md`` and ``results.png``;
- :mod:`benchmarks.profile`: the engine in-process with timers around each stage;
- :mod:`benchmarks.targets`, :mod:`benchmarks.texts`, :mod:`benchmarks.sysinfo`: goals, inputs, machine.

See BENCHMARKS.md for what every figure means.
"""
