"""``dipo eval``: k samples per problem on math benchmarks (mean@k, maj@k, pass@k) or BFCL categories (accuracy).

Examples::

    dipo eval --model smollm2-135m-instruct --task math --benchmarks math500,gsm8k --limit 32 -k 8
    dipo eval --model ./my-checkpoint --task toolcall --benchmarks simple,multiple,parallel,parallel_multiple
    dipo eval --model Qwen/Qwen3-8B --task math --dataset aime24.jsonl --prompt_field problem --answer_field answer

Writes ``results.json``, ``results.md`` and ``samples.jsonl`` (every completion with its verdict) to
``--output_dir``; a folder that already holds results is refused unless ``--overwrite`` is given. Every option is
checked before the model is loaded or a file is touched; bad input is one line on stderr (exit code 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dipo.cli.errors import (
    INPUT_ERRORS,
    check_model_source,
    check_output_dir,
    describe_error,
    model_load_error,
    non_negative_float,
    non_negative_int,
    positive_int,
    top_p_value,
)
from dipo.cli.options import add_option
from dipo.tasks.data import FieldMap
from dipo.tasks.registry import DataOptions, get_task, list_tasks

# Imported inside functions: torch and dipo.evaluation (torch, transformers), only when evaluating: `dipo --help`
# imports this module.

if TYPE_CHECKING:
    from dipo.evaluation import SamplingConfig

logger = logging.getLogger("dipo.eval")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``dipo eval``; multi-word options are spelled with underscores as in ``dipo train`` (the hyphenated
    spellings still work for one release and warn once, see :mod:`dipo.cli.options`)."""
    parser.add_argument("--model", default=None, help="model folder, Hub id, or 'smollm2-135m-instruct' (offline)")
    parser.add_argument("--task", choices=list_tasks(evaluable=True), default="math")
    parser.add_argument(
        "--benchmarks",
        default=None,
        help="comma list; math: gsm8k, math500, math_train, math_test (default math500,gsm8k); toolcall: BFCL "
        "categories (default simple,multiple,parallel,parallel_multiple,irrelevance)",
    )
    parser.add_argument("--dataset", action="append", default=[], help="extra dataset file/folder/Hub id (repeatable)")
    parser.add_argument("--split", default="test", help="split of --dataset Hub ids / folders")
    add_option(parser, "--config_name", default=None, help="config of --dataset Hub ids")
    add_option(parser, "--prompt_field", default="prompt", help="dotted field of --dataset rows holding the prompt")
    add_option(parser, "--answer_field", default="answer", help="dotted field holding the gold answer / calls")
    add_option(parser, "--tools_field", default="tools", help="toolcall: field holding the tool schemas (JSON)")
    add_option(parser, "--id_field", default=None)
    add_option(parser, "--skip_broken_rows", action="store_true", help="count and log broken rows instead of failing")
    parser.add_argument("--limit", type=positive_int, default=None, help="first N problems of each benchmark")
    parser.add_argument(
        "--offset", type=non_negative_int, default=0, help="skip the first N problems (to shard an evaluation)"
    )
    add_option(
        parser, "-k", "--num_samples", type=positive_int, default=None, help="samples per problem (math 8, toolcall 1)"
    )
    parser.add_argument("--temperature", type=non_negative_float, default=None, help="math 0.6; toolcall 0 (greedy)")
    add_option(parser, "--top_p", type=top_p_value, default=0.95, help="nucleus sampling mass, in (0, 1]")
    add_option(parser, "--max_new_tokens", type=positive_int, default=None, help="math 1024, toolcall 256")
    add_option(parser, "--batch_size", type=positive_int, default=4, help="prompts per generate call (x k sequences)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="auto", help="auto (fp32 on CPU, bf16 on GPU), float32, bfloat16, ...")
    parser.add_argument("--device", default=None)
    add_option(parser, "--chat_template", choices=["auto", "yes", "no"], default="auto")
    parser.add_argument("--instruction", default=None, help="math: instruction appended to plain problems")
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    add_option(parser, "--output_dir", default="eval_results")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results already in --output_dir (without it such a folder is refused)",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="DIR",
        help="combine the output folders of shards (--offset/--limit runs) into --output_dir; no generation",
    )
    parser.add_argument(
        "--rescore", action="store_true", help="with --merge (math): judge the stored completions again"
    )


def _benchmarks(args: argparse.Namespace) -> dict:
    """The rows of every benchmark and ``--dataset``, loaded through the task registry."""
    spec = get_task(args.task)
    evaluation = spec.evaluation
    assert evaluation is not None  # --task choices are the evaluable tasks
    data = DataOptions(
        fields=FieldMap(prompt=args.prompt_field, answer=args.answer_field, id=args.id_field),
        tools_field=args.tools_field,
        config_name=args.config_name,
        on_error="skip" if args.skip_broken_rows else "raise",
        instruction=args.instruction,
    )
    if args.offset < 0:
        raise ValueError(f"--offset must be >= 0, got {args.offset}")
    names = args.benchmarks.split(",") if args.benchmarks else ([] if args.dataset else list(evaluation.benchmarks))
    out = {}
    for name in filter(None, (n.strip() for n in names)):
        if evaluation.benchmark_names is not None and name not in evaluation.benchmark_names:
            raise ValueError(
                f"unknown {args.task} benchmark {name!r}; choose from {sorted(evaluation.benchmark_names)} or "
                "--dataset"
            )
        out[name] = spec.load(dataset=name, limit=args.limit, offset=args.offset, data=data)
    for source in args.dataset:
        out[Path(source).stem] = spec.load(
            dataset=source, split=args.split, limit=args.limit, offset=args.offset, data=data
        )
    if not out:
        raise ValueError("nothing to evaluate: give --benchmarks or --dataset")
    for name, rows in out.items():
        if not rows:
            raise ValueError(
                f"benchmark {name!r} has no rows" + (f" from --offset {args.offset} on" if args.offset else "")
            )
    return out


#: What ``dipo eval`` writes into ``--output_dir``.
RESULT_FILES = ("results.json", "results.md", "samples.jsonl")


def _check_output_dir(args: argparse.Namespace) -> Path:
    """``--output_dir`` as a writable folder that holds no results, or ``--overwrite`` was given
    (:func:`dipo.fileio.check_output_dir`)."""
    out_dir = Path(args.output_dir).expanduser()
    check_output_dir(out_dir, RESULT_FILES, what="results", overwrite=args.overwrite)
    return out_dir


def _write(results: dict, out_dir: Path, title: str, details: str) -> None:
    from dipo.evaluation import markdown_table

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    table = markdown_table(results)
    (out_dir / "results.md").write_text(f"# {title}\n\n{table}\n{details}\n")
    print(table)
    print(f"results written to {out_dir}/results.json, results.md")


def _merge(args: argparse.Namespace) -> int:
    from dipo.evaluation.harness import merge_results

    try:
        shard_dirs = [Path(d).expanduser() for d in args.merge]
        if any(_same_dir(d, Path(args.output_dir).expanduser()) for d in shard_dirs):
            raise ValueError(f"--output_dir {args.output_dir!r} is one of the shards; merge into another folder")
        results = merge_results(shard_dirs, rescore=args.rescore)
        out_dir = _check_output_dir(args)
        details = f"{results['hardware']}; sampling {json.dumps(results['sampling'])}; merged from "
        details += ", ".join(args.merge)
        details += " (completions re-judged with the current code)." if results["rescored"] else "."
        _write(results, out_dir, f"dipo eval: merged shards ({results['task']})", details)
    except INPUT_ERRORS as err:
        print(f"dipo eval --merge: {describe_error(err)}", file=sys.stderr)
        return 2
    return 0


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and a.samefile(b)
    except OSError:
        return False


def _sampling(args: argparse.Namespace) -> SamplingConfig:
    """The sampling configuration; the task's evaluation defaults only for options that were not given (0 is not
    "not given")."""
    from dipo.evaluation import SamplingConfig

    evaluation = get_task(args.task).evaluation
    assert evaluation is not None  # --task choices are the evaluable tasks
    defaults = evaluation.defaults

    def default(value: Any, task_default: Any) -> Any:
        return value if value is not None else task_default

    return SamplingConfig(
        k=default(args.num_samples, defaults.k),
        max_new_tokens=default(args.max_new_tokens, defaults.max_new_tokens),
        temperature=default(args.temperature, defaults.temperature),
        top_p=args.top_p,
        batch_size=args.batch_size,
        seed=args.seed,
        chat_template={"auto": None, "yes": True, "no": False}[args.chat_template],
    )


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.merge:
        return _merge(args)
    try:  # everything is validated before the model is loaded and before anything is written
        if not args.model:
            raise ValueError("--model is required (a folder, a Hub id or 'smollm2-135m-instruct')")
        check_model_source(args.model)
        sampling = _sampling(args)
        benchmarks = _benchmarks(args)
        out_dir = _check_output_dir(args)
        model, tokenizer = _load(args)
    except INPUT_ERRORS as err:
        print(f"dipo eval: {describe_error(err)}", file=sys.stderr)
        return 2
    from dipo.evaluation import run_benchmarks

    start = time.perf_counter()
    partial = out_dir / "samples.jsonl.partial"  # renamed when the run is complete: a failed run leaves no mix
    try:
        results = run_benchmarks(model, tokenizer, benchmarks, args.task, sampling, partial)
        os.replace(partial, out_dir / "samples.jsonl")
    except OSError as err:  # a full disk, a folder made read-only during the run; bugs keep their traceback
        print(f"dipo eval: {describe_error(err)}", file=sys.stderr)
        return 1
    results.update(model=args.model, limit=args.limit, offset=args.offset, total_seconds=time.perf_counter() - start)
    subset = f"problems {args.offset}..{args.offset + args.limit - 1}" if args.limit else f"from problem {args.offset}"
    details = f"{results['hardware']}; sampling {json.dumps(results['sampling'])}; {subset} of each benchmark."
    _write(results, out_dir, f"dipo eval: {args.model} ({args.task})", details)
    print(f"samples written to {out_dir}/samples.jsonl")
    return 0


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    """Model and tokenizer; ``--chat_template yes`` needs a tokenizer with a chat template."""
    import torch

    from dipo.evaluation import load_model

    if args.threads:
        torch.set_num_threads(args.threads)

    try:
        model, tokenizer = load_model(args.model, args.dtype, args.device)
    except OSError as err:
        raise model_load_error(args.model, "--model", err) from err
    if args.chat_template == "yes" and not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"--chat_template yes, but the tokenizer of {args.model!r} has no chat template; use --chat_template auto "
            "(plain-text prompts for such models) or no"
        )
    return model, tokenizer
