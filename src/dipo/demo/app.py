"""``dipo demo`` end to end: warm start (cached) → RL runs (method × seed) → evaluation → report."""

from __future__ import annotations

import json
import multiprocessing as mp
import queue as queue_mod
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from dipo.demo.evaluate import evaluate
from dipo.demo.methods import Method, resolve_methods
from dipo.demo.report import write_report
from dipo.demo.runner import RECORD_NAME, DemoConfig, _worker, run_one, save_json
from dipo.demo.warmstart import load_or_train_warmstart
from dipo.fileio import check_output_dir as guard_output_dir


def check_output_dir(out: Path, overwrite: bool = False, resume: bool = False) -> None:
    """Refuse to write into a folder that holds an earlier demo's results, unless ``overwrite`` or ``resume`` (not
    both); ``out`` must be a writable folder (:func:`dipo.fileio.check_output_dir`)."""
    guard_output_dir(
        out,
        ("results.json", f"runs/*/{RECORD_NAME}"),
        what="demo results",
        option="--out",
        overwrite=overwrite,
        resume=resume,
        resume_flag="--resume",
        resume_hint="pass --resume to keep its finished runs",
    )


def finished_runs(cfg: DemoConfig, out: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """Records of runs already finished in ``out`` under the same configuration (``--resume``)."""
    done: dict[tuple[str, int], dict[str, Any]] = {}
    key = cfg.run_key()
    for path in sorted(out.glob(f"runs/*/{RECORD_NAME}")):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a run interrupted while writing: run it again
        if record.get("run_key") == key:
            done[(record["method"], int(record["seed"]))] = record
    return done


def _progress(enabled: bool):
    return Progress(
        TextColumn("{task.description:<24}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=False,
    )


def warm_start(cfg: DemoConfig, use_cache: bool = True, show_progress: bool = True) -> tuple[Path, dict[str, Any]]:
    """Load or train the cached warm start and return (path, info)."""
    with _progress(show_progress) as bar:
        task_id = bar.add_task("warm start (SFT)", total=cfg.sft.steps)
        path, info = load_or_train_warmstart(
            cfg.task,
            cfg.model,
            cfg.sft,
            use_cache=use_cache,
            progress=lambda step, loss: bar.update(task_id, completed=step + 1),
        )
        bar.update(task_id, completed=cfg.sft.steps)
    return path, info


def evaluate_path(cfg: DemoConfig, path: Path, seed: int = 0) -> dict[str, Any]:
    """Greedy and mean@k of the model at ``path`` on the final held-out set."""
    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    items = cfg.task.heldout_set(cfg.final_eval_per_level, seed=2)
    res = evaluate(model, tokenizer, items, cfg.k, cfg.max_completion_length, temperature=cfg.temperature, seed=seed)
    return res.as_dict()


def run_demo(
    cfg: DemoConfig,
    out_dir: Path | str,
    use_cache: bool = True,
    show_progress: bool = True,
    title: str = "DiPO demo",
    resume: bool = False,
) -> dict[str, Any]:
    """Run every (method, seed) of ``cfg`` and write ``results.json`` and ``report.md`` under ``out_dir``.

    Each finished run also writes ``runs/<method>-s<seed>/record.json`` at once; ``resume=True`` reuses those of an
    earlier, interrupted call with the same configuration instead of running them again."""
    hf_logging.disable_progress_bar()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    methods = resolve_methods(list(cfg.methods))
    wall_start = time.perf_counter()
    torch.set_num_threads(max(1, torch.get_num_threads() if cfg.workers <= 1 else 1))

    t0 = time.perf_counter()
    warm_path, warm_info = warm_start(cfg, use_cache=use_cache, show_progress=show_progress)
    warm_seconds = time.perf_counter() - t0
    before = evaluate_path(cfg, warm_path)

    jobs = [(m, s) for m in methods for s in cfg.seeds]
    done = finished_runs(cfg, out) if resume else {}
    todo = [(m, s) for m, s in jobs if (m.name, s) not in done]
    fresh = {(r["method"], r["seed"]): r for r in _run_jobs(cfg, todo, str(warm_path), str(out), show_progress)}
    records = [done.get((m.name, s)) or fresh[(m.name, s)] for m, s in jobs]
    wall = time.perf_counter() - wall_start
    results = {
        "title": title,
        "config": cfg.as_dict(),
        "methods": {
            m.name: {
                "preset": m.preset,
                "overrides": m.overrides,
                "description": m.description,
            }
            for m in methods
        },
        "warmstart": {**warm_info, "path": str(warm_path), "seconds_this_run": warm_seconds, "heldout": before},
        "runs": records,
        "wall_seconds": wall,
        "threads_per_run": 1 if cfg.workers > 1 else torch.get_num_threads(),
        "workers": cfg.workers,
    }
    save_json(out / "results.json", results)

    write_report(results, out)
    return results


def _run_jobs(
    cfg: DemoConfig, jobs: Sequence[tuple[Method, int]], warm_path: str, out_dir: str, show_progress: bool
) -> list[dict[str, Any]]:
    """Run the jobs, in ``cfg.workers`` processes when > 1, with one progress bar per run."""
    records: list[dict[str, Any]] = []
    with _progress(show_progress) as bar:
        overall = bar.add_task("all runs", total=len(jobs))
        ids = {f"{m.name}-s{s}": bar.add_task(f"{m.name} seed {s}", total=cfg.steps) for m, s in jobs}
        if cfg.workers <= 1:
            for m, s in jobs:
                tag = f"{m.name}-s{s}"
                records.append(
                    run_one(
                        cfg, m, s, warm_path, out_dir, progress=lambda step, t=tag: bar.update(ids[t], completed=step)
                    )
                )
                bar.update(overall, advance=1)
            return records
        ctx = mp.get_context("spawn")
        with ctx.Manager() as manager:
            q = manager.Queue()
            payloads = [
                {"cfg": cfg, "method": m, "seed": s, "warm_path": warm_path, "out_dir": out_dir, "queue": q,
                 "tag": f"{m.name}-s{s}", "threads": 1}
                for m, s in jobs
            ]  # fmt: skip
            with ProcessPoolExecutor(max_workers=cfg.workers, mp_context=ctx) as pool:
                futures = [pool.submit(_worker, p) for p in payloads]
                pending = set(range(len(futures)))
                while pending:
                    try:
                        tag, step = q.get(timeout=0.5)
                        if step < 0:
                            bar.update(ids[tag], completed=cfg.steps)
                            bar.update(overall, advance=1)
                        else:
                            bar.update(ids[tag], completed=step)
                    except queue_mod.Empty:
                        pass
                    for i in list(pending):
                        if futures[i].done():
                            futures[i].result()  # re-raise a worker's error here
                            pending.discard(i)
                records = [f.result() for f in futures]
    return records


def load_results(out_dir: Path | str) -> dict[str, Any]:
    """Read back ``results.json`` of a finished demo (to rebuild the report)."""
    return json.loads((Path(out_dir) / "results.json").read_text())
