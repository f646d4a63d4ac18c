"""Evaluation: mean@k / maj@k / pass@k metrics, batched generation, math and BFCL scoring (``dipo eval``)."""

from dipo.evaluation.generation import Generations, SamplingConfig, generate, load_model
from dipo.evaluation.harness import markdown_table, run_benchmarks, score_bfcl, score_math
from dipo.evaluation.metrics import aggregate, maj_at_k, majority_vote, mean_at_k, pass_at_k

__all__ = [
    "Generations",
    "SamplingConfig",
    "aggregate",
    "generate",
    "load_model",
    "maj_at_k",
    "majority_vote",
    "markdown_table",
    "mean_at_k",
    "pass_at_k",
    "run_benchmarks",
    "score_bfcl",
    "score_math",
]
