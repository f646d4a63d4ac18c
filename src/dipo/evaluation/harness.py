"""Evaluation harness: sample k completions per problem, score them, aggregate per benchmark and overall.

* Math: mean@k (the paper's ACC/mean@8), maj@k and pass@k per benchmark, plus their unweighted average over
  benchmarks (as the paper averages its benchmarks).
* Function calling: BFCL accuracy per category (BFCL AST checker; irrelevance = no call), overall = unweighted
  mean over the evaluated categories, and the non-live AST summary = mean of simple, multiple, parallel,
  parallel_multiple (BFCL's own summary also averages java/javascript into "simple"; those need tree-sitter and
  are not evaluated here).

Which scoring a task uses comes from the task registry (:class:`dipo.tasks.registry.TaskEvaluation` carries the
task's :class:`Scoring` object); the harness never asks "math or function calling?" itself.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from dipo.evaluation.generation import Generations, SamplingConfig, generate
from dipo.evaluation.metrics import aggregate
from dipo.fileio import iter_json_lines, read_json
from dipo.tasks.data import TaskRow
from dipo.tasks.math import judge_completion, normalize_answer
from dipo.tasks.registry import get_task, list_tasks
from dipo.tasks.toolcall import bfcl_check, normalize_ground_truth, parse_tool_calls, validate_tools

logger = logging.getLogger(__name__)

BFCL_AST_CATEGORIES = ("simple", "multiple", "parallel", "parallel_multiple")


def hardware_description() -> str:
    """One line naming the device the evaluation ran on."""
    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)} x{torch.cuda.device_count()}"
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            name = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), name)
    except OSError:
        pass
    return f"CPU {name}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"


def _progress(name: str):
    last = [0.0]

    def report(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] > 30 or done == total:
            logger.info("%s: %d/%d prompts", name, done, total)
            last[0] = now

    return report


def math_metrics(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """mean@k, maj@k, pass@1, pass@k and answer statistics (percent) from per-sample math records."""
    problems = _by_problem(records)
    correct = [[bool(r["correct"]) for r in p] for p in problems]
    answers = [[normalize_answer(r["answer"]) if r["answer"] is not None else None for r in p] for p in problems]
    metrics = aggregate(correct, answers, ks=(1, len(correct[0])))
    n = len(records)
    metrics["answer_found"] = 100.0 * sum(r["answer"] is not None for r in records) / n
    metrics["boxed"] = 100.0 * sum(r["method"] == "boxed" for r in records) / n
    metrics["truncated"] = 100.0 * sum(bool(r["truncated"]) for r in records) / n
    metrics["mean_tokens"] = sum(r["num_tokens"] for r in records) / n
    return metrics


def bfcl_metrics(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Accuracy (percent, mean over samples and problems), share of parsed outputs and mean length."""
    problems = _by_problem(records)
    metrics = aggregate([[bool(r["correct"]) for r in p] for p in problems], None, ks=(1,))
    metrics["accuracy"] = metrics[f"mean@{len(problems[0])}"]
    metrics["parsed"] = 100.0 * sum(r["syntax"] is not None for r in records) / len(records)
    metrics["mean_tokens"] = sum(r["num_tokens"] for r in records) / len(records)
    return metrics


def _by_problem(records: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    problems: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        problems.setdefault(str(record["id"]), []).append(record)
    if not problems:
        raise ValueError("no samples to score")
    return [sorted(p, key=lambda r: r["sample"]) for p in problems.values()]


def score_math(rows: Sequence[TaskRow], gens: Generations) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Per-benchmark math metrics and per-sample records (answer, correct, extraction rule)."""
    records = []
    for row, texts, ntok, trunc in zip(rows, gens.texts, gens.num_tokens, gens.truncated, strict=True):
        for j, text in enumerate(texts):
            jd = judge_completion(text, row.answer)
            records.append(
                {"id": row.id, "sample": j, "gold": row.answer, "answer": jd.answer, "method": jd.method,
                 "correct": jd.correct, "num_tokens": ntok[j], "truncated": trunc[j], "completion": text}
            )  # fmt: skip
    return math_metrics(records), records


def score_bfcl(rows: Sequence[TaskRow], gens: Generations) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Accuracy (percent, mean over samples) of one BFCL category and per-sample records."""
    records = []
    for row, texts, ntok, trunc in zip(rows, gens.texts, gens.num_tokens, gens.truncated, strict=True):
        tools = validate_tools(row.meta["tools"], row.id)
        gold = normalize_ground_truth(row.answer, row.id)
        category = row.meta.get("category", "custom")
        for j, text in enumerate(texts):
            parsed = parse_tool_calls(text)
            if category == "live_relevance":
                ok, err = parsed.has_calls, (None if parsed.has_calls else "relevance:no_call")
            else:
                ok, err = bfcl_check(tools, parsed, gold, category)
            records.append(
                {"id": row.id, "sample": j, "category": category, "correct": ok, "error": err, "syntax": parsed.syntax,
                 "num_tokens": ntok[j], "truncated": trunc[j], "completion": text}
            )  # fmt: skip
    return bfcl_metrics(records), records


def rejudge_math(record: dict[str, Any]) -> dict[str, Any]:
    """A math sample record judged again from its completion and gold with the current extraction/verification."""
    judged = judge_completion(record["completion"], record["gold"])
    return {**record, "answer": judged.answer, "method": judged.method, "correct": judged.correct}


def merge_results(result_dirs: Sequence[Path], rescore: bool = False) -> dict[str, Any]:
    """Combine shards of one evaluation (``dipo eval --offset/--limit`` runs with the same task and k) by
    re-aggregating their ``samples.jsonl``; seconds add up. Raises ``ValueError`` if the shards disagree.
    ``rescore`` (math): judge every stored completion again with the current code instead of its stored verdict."""
    if not result_dirs:
        raise ValueError("no shard folders to merge")
    shards = [_read_shard_results(Path(d)) for d in result_dirs]
    tasks, ks = {s["task"] for s in shards}, {s["sampling"]["k"] for s in shards}
    if len(tasks) != 1 or len(ks) != 1:
        raise ValueError(f"shards differ in task {sorted(tasks)} or k {sorted(ks)}; merge only shards of one run")
    task, k = tasks.pop(), ks.pop()
    scoring = scoring_for(task)
    records: dict[str, list[dict[str, Any]]] = {}
    seconds: dict[str, float] = {}
    for directory, shard in zip(result_dirs, shards, strict=True):
        samples = Path(directory) / "samples.jsonl"
        shard_records = _read_samples(samples)
        missing = sorted(set(shard["benchmarks"]) - {r["benchmark"] for r in shard_records})
        if missing:
            raise ValueError(
                f"{samples}: no samples of benchmark(s) {missing} listed in its results.json (an interrupted or "
                "emptied run?); evaluate that shard again"
            )
        for record in shard_records:
            if rescore and scoring.rejudge is not None:
                record = scoring.rejudge(record)
            records.setdefault(record["benchmark"], []).append(record)
        for name, metrics in shard["benchmarks"].items():
            seconds[name] = seconds.get(name, 0.0) + metrics["seconds"]
    per_benchmark = {}
    for name, recs in records.items():
        if len({(r["id"], r["sample"]) for r in recs}) != len(recs):
            raise ValueError(f"benchmark {name!r}: the shards overlap (a problem appears twice)")
        metrics = scoring.metrics(recs)
        metrics.update(num_problems=len({r["id"] for r in recs}), seconds=seconds.get(name, 0.0))
        per_benchmark[name] = metrics
    return {
        "task": task,
        "sampling": shards[0]["sampling"],
        "hardware": shards[0]["hardware"],
        "benchmarks": per_benchmark,
        "average": scoring.average(per_benchmark, k),
        "seconds": sum(s["seconds"] for s in shards),
        "merged_from": [str(d) for d in result_dirs],
        "rescored": bool(rescore and scoring.rejudge is not None),
    }


def _read_shard_results(directory: Path) -> dict[str, Any]:
    """A shard's ``results.json``, checked for the keys :func:`merge_results` needs."""
    path = directory / "results.json"
    if not directory.is_dir():
        raise FileNotFoundError(f"shard folder {str(directory)!r} does not exist")
    shard = read_json(path)  # errors name the file (and line)
    if not isinstance(shard, dict) or not {"task", "sampling", "benchmarks", "seconds"} <= set(shard):
        raise ValueError(f"{path}: not a dipo eval results.json (needs task, sampling, benchmarks, seconds)")
    if not shard["benchmarks"]:
        raise ValueError(f"{path}: the shard evaluated no benchmark")
    return shard


def _read_samples(path: Path) -> list[dict[str, Any]]:
    """The records of a ``samples.jsonl``; a broken line is reported with its number."""
    records = []
    for lineno, record in iter_json_lines(path):  # a line that is not UTF-8 JSON: an error naming it
        if not isinstance(record, dict) or "benchmark" not in record:
            raise ValueError(f"{path}: line {lineno} is not a dipo eval sample record")
        records.append(record)
    return records


def run_benchmarks(
    model: Any,
    tokenizer: Any,
    benchmarks: dict[str, Sequence[TaskRow]],
    task: str,
    sampling: SamplingConfig,
    samples_path: Path | None = None,
) -> dict[str, Any]:
    """Generate and score every benchmark; returns the results dictionary written by ``dipo eval``."""
    scoring = scoring_for(task)
    results: dict[str, Any] = {"task": task, "sampling": asdict(sampling), "hardware": hardware_description()}
    per_benchmark: dict[str, Any] = {}
    total_start = time.perf_counter()
    sample_file = samples_path.open("w", encoding="utf-8") if samples_path else None
    try:
        for name, rows in benchmarks.items():
            if not rows:
                raise ValueError(f"benchmark {name!r} has no rows")
            gens = generate(model, tokenizer, [r.prompt for r in rows], sampling, progress=_progress(name))
            metrics, records = scoring.score(rows, gens)
            metrics.update(num_problems=len(rows), seconds=gens.seconds)
            per_benchmark[name] = metrics
            key = scoring.headline(sampling.k)
            logger.info("%s: %s=%.2f over %d problems in %.0f s", name, key, metrics[key], len(rows), gens.seconds)
            if sample_file:
                for rec in records:
                    sample_file.write(json.dumps({"benchmark": name, **rec}, ensure_ascii=False) + "\n")
                sample_file.flush()
    finally:
        if sample_file:
            sample_file.close()
    results["benchmarks"] = per_benchmark
    results["average"] = scoring.average(per_benchmark, sampling.k)
    results["seconds"] = time.perf_counter() - total_start
    return results


def math_average(per_benchmark: dict[str, dict[str, float]], k: int) -> dict[str, float]:
    """Unweighted mean over the benchmarks of mean@k, maj@k, pass@k (and pass@1 when k > 1)."""
    _check_not_empty(per_benchmark)
    keys = [f"mean@{k}", f"maj@{k}", f"pass@{k}"] + (["pass@1"] if k > 1 else [])
    return {key: sum(m[key] for m in per_benchmark.values()) / len(per_benchmark) for key in keys}


def bfcl_average(per_benchmark: dict[str, dict[str, float]], k: int) -> dict[str, float]:
    """Overall BFCL accuracy (unweighted mean over categories) and the non-live AST summary when all four ran."""
    _check_not_empty(per_benchmark)
    out = {"overall": sum(m["accuracy"] for m in per_benchmark.values()) / len(per_benchmark)}
    ast = [per_benchmark[c]["accuracy"] for c in BFCL_AST_CATEGORIES if c in per_benchmark]
    if len(ast) == len(BFCL_AST_CATEGORIES):
        out["non_live_ast"] = sum(ast) / len(ast)
    return out


def _check_not_empty(per_benchmark: dict[str, dict[str, float]]) -> None:
    if not per_benchmark:
        raise ValueError("no benchmark results to average")


def _math_average_rows(average: dict[str, float], columns: list[str]) -> list[str]:
    cells = [f"{average[c]:.1f}" if c in average else "" for c in columns]
    return ["| **average** | | " + " | ".join(cells) + " | |"]


def _bfcl_average_rows(average: dict[str, float], columns: list[str]) -> list[str]:
    return [f"| **{key}** | | {value:.1f} |" + " |" * (len(columns) - 1) + " |" for key, value in average.items()]


@dataclass(frozen=True)
class Scoring:
    """How one kind of task is scored, summarised and tabulated (a task's ``TaskEvaluation.scoring`` returns it).

    ``score``: per-benchmark metrics and per-sample records from generations; ``metrics``: metrics from records (merge
    of shards); ``headline``: the metric logged per benchmark for k samples; ``average``: the summary over
    benchmarks; ``columns`` / ``average_rows``: the markdown table; ``rejudge``: judge a stored record again
    (``dipo eval --merge --rescore``), ``None`` if the task's verdicts cannot be recomputed.
    """

    score: Callable[[Sequence[TaskRow], Generations], tuple[dict[str, float], list[dict[str, Any]]]]
    metrics: Callable[[Sequence[dict[str, Any]]], dict[str, float]]
    headline: Callable[[int], str]
    average: Callable[[dict[str, dict[str, float]], int], dict[str, float]]
    columns: Callable[[int], list[str]]
    average_rows: Callable[[dict[str, float], list[str]], list[str]]
    rejudge: Callable[[dict[str, Any]], dict[str, Any]] | None = None


MATH_SCORING = Scoring(
    score=score_math,
    metrics=math_metrics,
    headline=lambda k: f"mean@{k}",
    average=math_average,
    columns=lambda k: [f"mean@{k}", f"maj@{k}", f"pass@{k}", "answer_found", "boxed", "truncated", "mean_tokens"],
    average_rows=_math_average_rows,
    rejudge=rejudge_math,
)
BFCL_SCORING = Scoring(
    score=score_bfcl,
    metrics=bfcl_metrics,
    headline=lambda k: "accuracy",
    average=bfcl_average,
    columns=lambda k: ["accuracy", "parsed", "mean_tokens"],
    average_rows=_bfcl_average_rows,
)
#: The scorings by name (a task's ``TaskEvaluation.scoring`` hands over the object; a name here is deprecated).
SCORINGS: dict[str, Scoring] = {"math": MATH_SCORING, "bfcl": BFCL_SCORING}


def scoring_for(task: str) -> Scoring:
    """The :class:`Scoring` of registered task ``task``; ``ValueError`` if ``dipo eval`` cannot evaluate it."""
    evaluation = get_task(task).evaluation
    if evaluation is None:
        raise ValueError(f"task {task!r} has no evaluation; dipo eval evaluates {', '.join(list_tasks(True))}")
    return evaluation.scorer()


def markdown_table(results: dict[str, Any]) -> str:
    """Results as a markdown table (one row per benchmark and the average row(s))."""
    k = results["sampling"]["k"]
    scoring = scoring_for(results["task"])
    cols = scoring.columns(k)
    lines = ["| benchmark | n | " + " | ".join(cols) + " | seconds |", "|" + "---|" * (len(cols) + 3)]
    for name, m in results["benchmarks"].items():
        cells = [f"{m[c]:.1f}" for c in cols]
        lines.append(f"| {name} | {m['num_problems']} | " + " | ".join(cells) + f" | {m['seconds']:.0f} |")
    lines += scoring.average_rows(results["average"], cols)
    return "\n".join(lines) + "\n"
