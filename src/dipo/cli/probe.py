"""``dipo probe``: does DiPO's premise hold for this model and task? Check it before training.

Samples k responses per prompt with the training sampler's settings, scores them with the task's reward and reports
τ*, the advantage judgment (Δ_EiS, Δ_ErS, Wilson intervals), the AUROC of perplexity for correctness, quadrant and
group fractions, how many extreme groups BRR would reallocate under each membership rule, and PPL histograms of
correct vs wrong responses (overall and by response length). Every quantity comes from ``dipo.core``.

Examples::

    dipo probe --model smollm2-135m-instruct --task nl_arithmetic --dataset add1 --limit 128 -k 8 --threads 1
    dipo probe --model ~/.cache/dipo/warmstart/<key> --task arithmetic --limit 128
    dipo probe --model ./ckpt --task math --dataset gsm8k --limit 64 --offset 64 --output_dir out/probe-b
    dipo probe --merge out/probe-a out/probe-b --output_dir out/probe

Writes ``meta.json``, ``samples.jsonl``, ``probe.json``, ``probe.md`` and ``ppl_hist*.png`` to ``--output_dir``;
refuses an existing probe folder unless ``--resume`` (same settings, continue) or ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from dipo.cli.errors import (
    INPUT_ERRORS,
    Range,
    check_model_source,
    confidence_value,
    describe_error,
    non_negative_int,
    positive_float,
    positive_int,
    top_p_value,
)
from dipo.cli.options import add_option
from dipo.tasks.registry import list_tasks

# Imported inside functions: torch and dipo.probe (torch), only when probing: `dipo --help` imports this module.

#: ``-k``: the probe samples groups, as training does (G >= 2).
GROUP_SIZE = Range(low=2, integer=True)


SAMPLE_DTYPE_HELP = (
    "weights that draw the tokens: bf16 (a bf16 copy samples, one teacher-forced pass of the policy recomputes the "
    "log-probs) or fp32 (the policy itself samples); the PPL is the policy's either way. auto (default): the policy's "
    "own dtype (bf16 + rescoring measured slower on short answers even on a CPU with native bf16)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_option(parser, "--model", default=None, help="model folder, Hub id, or 'smollm2-135m-instruct' (offline)")
    add_option(parser, "--task", default="nl_arithmetic", help=f"a registered task: {', '.join(list_tasks())}")
    add_option(
        parser,
        "--dataset",
        default=None,
        help="task data: nl_arithmetic levels (add1, mul1, add2, word; comma list), arithmetic levels (1-5), math "
        "benchmark (gsm8k, math500, ...) or BFCL category, or a file / Hub id (default: the task's)",
    )
    add_option(parser, "--split", default=None, help="split (nl_arithmetic / arithmetic: train, heldout; files)")
    add_option(
        parser, "-k", "--num_samples", type=GROUP_SIZE.parse, default=None, help="samples per prompt, >= 2 (default 8)"
    )
    add_option(parser, "--limit", type=positive_int, default=128, help="number of prompts (default 128)")
    add_option(
        parser, "--offset", type=non_negative_int, default=0, help="skip the first N prompts (to shard a probe)"
    )
    add_option(
        parser, "--temperature", type=positive_float, default=1.0, help="sampling temperature, > 0 (TRL's default 1.0)"
    )
    add_option(
        parser, "--top_p", type=top_p_value, default=1.0, help="nucleus sampling, in (0, 1] (TRL's default 1.0)"
    )
    add_option(
        parser, "--max_new_tokens", type=positive_int, default=None, help="max response tokens (default: the task's)"
    )
    add_option(parser, "--chat_template", choices=["auto", "yes", "no"], default="auto")
    add_option(parser, "--batch_size", type=positive_int, default=4, help="prompts per generate call (x k sequences)")
    add_option(parser, "--seed", type=int, default=0, help="seed of the prompts (generated tasks) and the sampler")
    add_option(parser, "--dtype", default="auto", help="auto (fp32 on CPU, bf16 on GPU), float32, bfloat16, ...")
    add_option(parser, "--device", default=None)
    # -- sampling dtype (dipo.probe.sampling): a bf16 copy draws the tokens, the policy (--dtype) scores them
    add_option(parser, "--sample_dtype", choices=["auto", "bf16", "fp32"], default="auto", help=SAMPLE_DTYPE_HELP)
    add_option(parser, "--threads", type=positive_int, default=None, help="torch CPU threads")
    add_option(
        parser,
        "--truncated",
        choices=["exclude", "include"],
        default="exclude",
        help="responses without EOS within --max_new_tokens: 'exclude' from the PPL analysis (as DAPO's overlong "
        "filtering, the dapo/dipo presets) or 'include'",
    )
    add_option(
        parser,
        "--judgment_confidence",
        type=confidence_value,
        default=0.95,
        help="Wilson confidence of the judgment, in (0, 1); 0 = point estimates",
    )
    add_option(
        parser,
        "--batch_prompts",
        type=non_negative_int,
        default=8,
        help="prompts per simulated training step in the DiPO replay (0: off)",
    )
    add_option(
        parser, "--length_bins", type=positive_int, default=3, help="response-length bins of the split by length"
    )
    add_option(parser, "--output_dir", default="probe_results")
    add_option(parser, "--overwrite", action="store_true", help="replace an existing probe in --output_dir")
    add_option(parser, "--resume", action="store_true", help="continue an unfinished probe in --output_dir")
    add_option(parser, "--no_progress", action="store_true", help="no progress bar")
    add_option(
        parser,
        "--merge",
        nargs="+",
        default=None,
        metavar="DIR",
        help="combine probe shards into --output_dir (no sampling)",
    )


def run(args: argparse.Namespace) -> int:
    """Every option, the model folder and ``--output_dir`` are checked before the model is loaded and before a file
    is written; bad input is one line on stderr, exit code 2."""
    from dipo.probe import AnalysisConfig, merge_probes, run_probe

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        analysis = AnalysisConfig(
            truncated=args.truncated,
            judgment_confidence=args.judgment_confidence or None,
            batch_prompts=args.batch_prompts,
            length_bins=args.length_bins,
        )
        if args.merge:
            out = merge_probes(args.merge, args.output_dir, analysis, overwrite=args.overwrite)
        else:
            if not args.model:
                raise ValueError("--model is required (a folder, a Hub id or 'smollm2-135m-instruct')")
            check_model_source(args.model)
            if args.threads:
                import torch

                torch.set_num_threads(args.threads)
            out = run_probe(**_probe_options(args), analysis=analysis)
    except INPUT_ERRORS as err:
        print(f"dipo probe{' --merge' if args.merge else ''}: {describe_error(err)}", file=sys.stderr)
        return 2
    from dipo.probe.report import verdict

    result = out["result"]
    print(verdict(result))
    print(json.dumps({key: result.get(key) for key in ("accuracy", "threshold_ppl", "auroc", "groups")}, indent=1))
    print(f"report written to {args.output_dir}/probe.md (probe.json, samples.jsonl, ppl_hist*.png)")
    return 0


def _probe_options(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`dipo.probe.run_probe` (``analysis`` aside) from the command line."""
    return {
        "model": args.model,
        "task": args.task,
        "output_dir": Path(args.output_dir).expanduser(),
        "dataset": args.dataset,
        "split": args.split,
        "k": args.num_samples,
        "limit": args.limit,
        "offset": args.offset,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "max_new_tokens": args.max_new_tokens,
        "chat_template": {"auto": None, "yes": True, "no": False}[args.chat_template],
        "batch_size": args.batch_size,
        "seed": args.seed,
        "dtype": args.dtype,
        "device": args.device,
        "sample_dtype": args.sample_dtype,
        "overwrite": args.overwrite,
        "resume": args.resume,
        "show_progress": not args.no_progress,
    }
