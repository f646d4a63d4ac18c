"""Timing helpers shared by ``benchmarks/`` and ``scripts/gpu_check.py`` (one place for "how a step is timed").

* :class:`StepTimer` — a ``TrainerCallback`` recording the wall and process-CPU time of every optimizer step,
  synchronised with the device, and the number of ``torch.compile`` graphs built after each step;
* :class:`TimedDiPOTrainer` — a ``DiPOTrainer`` that also times its rollouts (``_generate_single_turn``: seconds and
  generated tokens) and DiPO's own work per generation batch (``_apply_dipo``: log-PPL, gather, ``dipo.core`` step,
  folding, metrics and the extra forward when there is one), wall (synchronised) and CPU;
* :func:`sync`, :func:`median`, :func:`dynamo_graphs`, :func:`quiet_transformers`.

Imports TRL: use it from benchmarks and scripts, not from the library.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.utils import logging as hf_logging

from dipo.integrations.trl import DiPOTrainer

# Imported inside functions: torch._dynamo (slow to import; may be missing), only to count compiled graphs.


def sync(device: torch.device | None) -> None:
    """Wait for the device's queued work (CUDA); a no-op on CPU."""
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def median(values: list[float]) -> float:
    """Median, NaN for no values."""
    return statistics.median(values) if values else math.nan


def dynamo_graphs() -> int:
    """Number of graphs ``torch.compile`` has built in this process (-1 if unknown)."""
    try:
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])
    except Exception:
        return -1


def quiet_transformers() -> None:
    """Errors only from transformers, no progress bars, no warnings (timing runs print their own lines)."""
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore")


class StepTimer(TrainerCallback):
    """Wall and process-CPU seconds of every optimizer step (generation happens inside the step that needs it),
    synchronised with ``device``, and the compiled-graph count after each step."""

    def __init__(self, device: torch.device | None = None) -> None:
        self.device = device
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.graphs: list[int] = []
        self._start = (0.0, 0.0)

    @property
    def times(self) -> list[tuple[float, float]]:
        """``(wall, cpu)`` seconds of every step."""
        return list(zip(self.wall, self.cpu, strict=True))

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        sync(self.device)
        self._start = (time.perf_counter(), time.process_time())

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        sync(self.device)
        self.wall.append(time.perf_counter() - self._start[0])
        self.cpu.append(time.process_time() - self._start[1])
        self.graphs.append(dynamo_graphs())


class TimedDiPOTrainer(DiPOTrainer):
    """``DiPOTrainer`` recording its rollouts (``rollouts``: wall seconds, generated tokens) and DiPO's work per
    generation batch (``dipo_work`` wall seconds, ``dipo_work_cpu`` process-CPU seconds), device-synchronised."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rollouts: list[tuple[float, int]] = []
        self.dipo_work: list[float] = []
        self.dipo_work_cpu: list[float] = []

    def _generate_single_turn(self, prompt_ids: Any, *args: Any, **kwargs: Any) -> Any:
        sync(self.accelerator.device)
        start = time.perf_counter()
        completion_ids, logprobs = super()._generate_single_turn(prompt_ids, *args, **kwargs)
        sync(self.accelerator.device)
        self.rollouts.append((time.perf_counter() - start, sum(len(c) for c in completion_ids)))
        return completion_ids, logprobs

    def _apply_dipo(self, output: dict[str, Any], rewards_per_func: torch.Tensor) -> None:
        sync(self.accelerator.device)
        start, cpu_start = time.perf_counter(), time.process_time()
        super()._apply_dipo(output, rewards_per_func)
        sync(self.accelerator.device)
        self.dipo_work.append(time.perf_counter() - start)
        self.dipo_work_cpu.append(time.process_time() - cpu_start)
