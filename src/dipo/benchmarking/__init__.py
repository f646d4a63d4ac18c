"""Benchmark and GPU-check helpers, shared by ``benchmarks/`` and ``scripts/gpu_check.py`` (they import TRL):

* :mod:`dipo.benchmarking.timing` — step timer, a ``DiPOTrainer`` that times rollouts and DiPO's work, medians;
* :mod:`dipo.benchmarking.policy` — the timing policy and the bench of timing trainers over it;
* :mod:`dipo.benchmarking.checks` — semantic checks of the fast generation path.
"""
