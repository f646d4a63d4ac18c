"""The ``dipo demo`` runner: warm start once, then RL runs (method × seed) through ``DiPOTrainer``, evaluated on
held-out items before and after, with per-step metrics collected for the report.

Runs are independent jobs; with ``workers > 1`` they execute in parallel processes (one torch thread each),
which is the fastest layout for a tiny model on a few CPU cores.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    PrinterCallback,
    TrainerCallback,  # heavy: imported when a run starts
)
from transformers.utils import logging as hf_logging

from dipo import DiPOConfig, DiPOTrainer
from dipo.core import GroupType
from dipo.demo.evaluate import evaluate
from dipo.demo.instruments import BatchRecorder
from dipo.demo.methods import Method
from dipo.demo.model import ModelSpec
from dipo.demo.regimes import get_regime
from dipo.demo.warmstart import SFTConfig
from dipo.tasks.arithmetic import ArithmeticTask, arithmetic_reward, to_records

RECORD_NAME = "record.json"
"""Each finished run writes its record here, under ``<out>/runs/<method>-s<seed>/``."""


@dataclass(frozen=True)
class DemoConfig:
    """Everything a demo run depends on (defaults: the full demo, ≈10 min on 2 idle CPU cores)."""

    methods: tuple[str, ...] = ("grpo", "dapo", "dipo")
    seeds: tuple[int, ...] = (0, 1, 2)
    steps: int = 100
    prompts_per_step: int = 32
    num_generations: int = 8
    learning_rate: float = 3e-4
    warmup_steps: int = 10
    temperature: float = 1.0
    max_completion_length: int = 8
    eval_every: int = 10
    eval_per_level: int = 40  # held-out items per level during training (greedy + mean@k)
    final_eval_per_level: int = 100  # held-out items per level before/after (greedy + mean@k)
    k: int = 8
    ppl_window: int = 5  # steps whose per-response PPLs form the "early" / "late" distributions
    workers: int = 2
    trainer_overrides: dict[str, Any] = field(default_factory=dict)  # extra DiPOConfig fields for every method
    task: ArithmeticTask = field(default_factory=lambda: ArithmeticTask(ops=("+",)))
    model: ModelSpec = field(default_factory=lambda: ModelSpec(num_hidden_layers=2))
    sft: SFTConfig = field(default_factory=SFTConfig)
    regime: str = "neutral"  # name of the testbed (dipo.demo.regimes); set task and sft through `for_regime`
    instruments: bool = True  # per-step entropy split and entropy shift on reallocated groups (dipo.demo.instruments)
    device: str = "cpu"  # where the RL runs train: "cpu", or e.g. "cuda" (the trainer then places the model there)

    @classmethod
    def for_regime(cls, name: str, **changes: Any) -> DemoConfig:
        """The demo configuration of a named regime testbed (task, teacher, SFT length), plus ``changes``."""
        regime = get_regime(name)
        sft = SFTConfig(steps=regime.sft_steps, teacher=regime.teacher) if regime.teacher is not None else SFTConfig()
        return replace(cls(), regime=name, task=regime.task, sft=sft, **changes)

    def quick(self) -> DemoConfig:
        """The ≤ 2-minute smoke configuration."""
        return replace(
            self,
            seeds=(0,),
            steps=8,
            prompts_per_step=8,
            warmup_steps=0,
            eval_every=4,
            eval_per_level=10,
            final_eval_per_level=20,
            k=4,
            ppl_window=2,
            sft=replace(self.sft, steps=min(self.sft.steps, 800)),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def run_key(self) -> str:
        """Hash of everything a single (method, seed) run depends on (methods, seeds and workers excluded): a finished
        run's record is reused by ``--resume`` only under the same key."""
        excluded = ("methods", "seeds", "workers") + (("device",) if self.device == "cpu" else ())  # CPU: old keys
        payload = {k: v for k, v in self.as_dict().items() if k not in excluded}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _metric_rows(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Per-step training metrics from TRL's ``log_history`` (the final summary entry dropped)."""
    rows = []
    for entry in log_history:
        if "step" not in entry or "train_runtime" in entry:
            continue
        rows.append({k: (float(v) if isinstance(v, int | float) else math.nan) for k, v in entry.items()})
    return rows


def _trainer_settings(cfg: DemoConfig, method: Method, seed: int, run_dir: Path) -> dict[str, Any]:
    """The ``DiPOConfig`` keyword arguments of one run: the demo's schedule, then ``cfg.trainer_overrides``, then the
    method's overrides (diagnostics on unless the method says otherwise)."""
    overrides = dict(method.overrides)
    # Diagnostics for every method (PSD runs in observe-only mode for GRPO/DAPO and the CDE-style baseline, whose bonus
    # the trainer applies to the advantages, leaving the verifier reward binary).
    overrides.setdefault("dipo_log_diagnostics", True)
    settings: dict[str, Any] = dict(
        output_dir=str(run_dir),
        preset=method.preset,
        max_steps=cfg.steps,
        per_device_train_batch_size=cfg.prompts_per_step * cfg.num_generations,
        gradient_accumulation_steps=1,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=cfg.warmup_steps,
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=cfg.device == "cpu",
        bf16=False,
        seed=seed,
        data_seed=seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    settings.update(cfg.trainer_overrides)
    settings.update(overrides)
    return settings


@dataclass
class _RunLog:
    """What one run records while it trains: held-out evaluations every ``cfg.eval_every`` steps, the (log-PPL,
    reward) pairs of the first and last ``cfg.ppl_window`` steps, and the instrument rows per step."""

    cfg: DemoConfig
    model: Any
    tokenizer: Any
    heldout: list[Any]
    traps: list[bool]
    recorder: BatchRecorder | None = None
    progress: Callable[[int], None] | None = None
    trainer: Any = None
    evals: list[dict[str, Any]] = field(default_factory=list)
    ppl_early: list[tuple[float, float]] = field(default_factory=list)
    ppl_late: list[tuple[float, float]] = field(default_factory=list)
    instruments: dict[int, dict[str, float]] = field(default_factory=dict)

    def eval_row(self, step: int) -> None:
        """Evaluate on the small held-out set (seeded by ``step``) and keep the row."""
        cfg = self.cfg
        res = evaluate(
            self.model, self.tokenizer, self.heldout, cfg.k, cfg.max_completion_length, temperature=cfg.temperature,
            seed=step,
        )  # fmt: skip
        row: dict[str, Any] = {"step": float(step), "heldout_greedy": res.greedy, "heldout_mean_at_k": res.mean_at_k}
        row.update({f"heldout_mean_at_k/L{lv}": v for lv, v in res.mean_at_k_by_level.items()})
        row.update({f"heldout_pass_at_k/L{lv}": v for lv, v in res.pass_at_k_by_level.items()})
        row["heldout_pass_at_k"] = res.pass_at_k
        row["heldout_filler_rate"] = res.filler_rate
        row["heldout_mean_at_k/trap"] = _subset_mean(res.item_hits, self.traps, cfg.k)
        row["item_hits"] = res.item_hits
        self.evals.append(row)

    def on_step_end(self, step: int) -> None:
        """After optimizer step ``step``: keep its PPL pairs and instrument row, evaluate when due, report progress."""
        cfg = self.cfg
        record = getattr(self.trainer, "last_dipo_batch", None)
        if record is not None:
            pairs = list(zip(record.log_ppl.tolist(), record.rewards.tolist(), strict=True))
            if step <= cfg.ppl_window:
                self.ppl_early.extend(pairs)
            if step > cfg.steps - cfg.ppl_window:
                self.ppl_late.extend(pairs)
        if self.recorder is not None and record is not None and record.output is not None:
            self.instruments[step] = _instrument_row(self.recorder, record.output, cfg.num_generations)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            self.eval_row(step)
        if self.progress is not None:
            self.progress(step)

    def callback(self) -> Any:
        """A ``TrainerCallback`` that calls :meth:`on_step_end`."""
        log = self

        class DemoCallback(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                log.on_step_end(state.global_step)

        return DemoCallback()


def run_one(
    cfg: DemoConfig,
    method: Method,
    seed: int,
    warm_path: str,
    out_dir: str,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """One RL run of ``method`` with ``seed`` from the warm start; returns a JSON-able record."""
    start = time.perf_counter()
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(warm_path)
    model = AutoModelForCausalLM.from_pretrained(warm_path)
    n_prompts = cfg.steps * cfg.prompts_per_step
    train = Dataset.from_list(to_records(cfg.task.sample(n_prompts, seed=10_000 + seed, split="train")))
    heldout_small = cfg.task.heldout_set(cfg.eval_per_level, seed=1)
    heldout_final = cfg.task.heldout_set(cfg.final_eval_per_level, seed=2)
    run_dir = Path(out_dir) / "runs" / f"{method.name}-s{seed}"
    args = DiPOConfig(**_trainer_settings(cfg, method, seed, run_dir))
    recorder = BatchRecorder(arithmetic_reward, tokenizer) if cfg.instruments else None
    log = _RunLog(cfg, model, tokenizer, heldout_small, _traps(cfg, heldout_small), recorder, progress)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = DiPOTrainer(
            model=model,
            reward_funcs=[recorder or arithmetic_reward],
            args=args,
            train_dataset=train,
            processing_class=tokenizer,
            callbacks=[log.callback()],
        )
        trainer.remove_callback(PrinterCallback)  # disable_tqdm=True would print every log dict
        log.trainer = trainer
        if recorder is not None:
            recorder.model = trainer.model
        log.eval_row(0)
        trainer.train()
    record = {
        "method": method.name,
        "seed": seed,
        "history": _history(trainer.state.log_history, log.instruments),
        "evals": log.evals,
        "final": _final_record(cfg, model, tokenizer, heldout_final, seed),
        "ppl_early": log.ppl_early,
        "ppl_late": log.ppl_late,
        "seconds": time.perf_counter() - start,
        "run_key": cfg.run_key(),
    }
    save_json(run_dir / RECORD_NAME, record)  # kept even if a later run of the demo fails
    return record


def _traps(cfg: DemoConfig, items: list[Any]) -> list[bool]:
    """Which ``items`` are traps of the warm start's teacher (none without a teacher)."""
    teacher = cfg.sft.teacher
    return [teacher is not None and teacher.is_trap(it) for it in items]


def _history(log_history: list[dict[str, Any]], instruments: dict[int, dict[str, float]]) -> list[dict[str, Any]]:
    """The per-step metric rows of TRL's ``log_history``, each with its step's instrument row."""
    history = _metric_rows(log_history)
    for row in history:
        row.update(instruments.get(int(row["step"]), {}))
    return history


def _final_record(cfg: DemoConfig, model: Any, tokenizer: Any, heldout: list[Any], seed: int) -> dict[str, Any]:
    """The final evaluation on the large held-out set (seed ``12345 + seed``), with the trap items' mean@k."""
    final = evaluate(
        model, tokenizer, heldout, cfg.k, cfg.max_completion_length, temperature=cfg.temperature, seed=12_345 + seed
    )
    traps = _traps(cfg, heldout)
    record = final.as_dict()
    record["trap_mean_at_k"] = _subset_mean(final.item_hits, traps, cfg.k)
    record["trap_items"] = traps
    return record


def _subset_mean(item_hits: list[int], subset: list[bool], k: int) -> float:
    """mean@k over the items flagged in ``subset`` (NaN if none)."""
    hits = [h for h, flag in zip(item_hits, subset, strict=True) if flag]
    return sum(hits) / (k * len(hits)) if hits else math.nan


def _instrument_row(recorder: BatchRecorder, out: Any, group_size: int) -> dict[str, float]:
    """Entropy split of the batch and entropy shift (after − before the update) on reallocated / other extreme groups.

    For GRPO/DAPO (observe-only PSD) the "reallocated" groups are those DiPO *would* have reallocated: the control."""

    def rows(groups: Any) -> Any:
        return groups.repeat_interleave(group_size)

    hard, easy = out.group_types == GroupType.HARD, out.group_types == GroupType.EASY
    row = {f"demo/{k}": v for k, v in recorder.split.items()}
    row.update(
        recorder.entropy_shifts(
            {
                "demo/dH_realloc_hard": rows(out.realloc_hard),
                "demo/dH_realloc_easy": rows(out.realloc_easy),
                "demo/dH_other_hard": rows(hard & ~out.realloc_hard),
                "demo/dH_other_easy": rows(easy & ~out.realloc_easy),
            }
        )
    )
    return row


def _worker(payload: dict[str, Any]) -> dict[str, Any]:
    """Process-pool entry: one torch thread, progress through a queue."""
    hf_logging.disable_progress_bar()
    torch.set_num_threads(payload.get("threads", 1))
    queue = payload.get("queue")
    tag = payload["tag"]

    def progress(step: int) -> None:
        if queue is not None:
            queue.put((tag, step))

    record = run_one(
        payload["cfg"], payload["method"], payload["seed"], payload["warm_path"], payload["out_dir"], progress
    )
    if queue is not None:
        queue.put((tag, -1))
    return record


def default_workers() -> int:
    """Parallel runs: one per available core, at most 2 by default (``$DIPO_DEMO_WORKERS`` overrides)."""
    env = os.environ.get("DIPO_DEMO_WORKERS")
    if env:
        return max(1, int(env))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(2, cores))


def save_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1, default=str))
