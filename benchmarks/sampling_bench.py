"""Tokens/s of ``dipo probe``'s and held-out evaluation's sampling paths, measured in one run on the same prompts.

- ``fp32``: the fp32 policy samples and records its log-probs as it goes (``--sample_dtype fp32``), each response
  leaving the batch once it has ended (``dipo.evaluation.decoding.decode_pruned``);
- ``fp32-generate``: the same through transformers' ``generate``, which computes every row until the longest ends;
- ``fp32-per-sample-prefill``: ``fp32-generate``, but ``generate`` prefills each of the k copies of a prompt (what
  ``num_return_sequences=k`` does) instead of one shared prefill per prompt (``shared_prompt_cache``);
- ``fp32-repeat-kv``: ``fp32-generate``, but decode steps use transformers' sdpa, which copies the key/value cache
  once per query head (``repeat_kv``), instead of ``dipo.evaluation.attention.grouped_decode_sdpa``;
- ``bf16``: a bf16 copy samples and its own logits give the log-probs (fast, but not the fp32 policy's PPL);
- ``bf16+rescore``: a bf16 copy samples, one teacher-forced fp32 pass recomputes the log-probs (``--sample_dtype
  bf16``, the default: the PPL is the fp32 policy's);
- ``eval``: held-out evaluation's sampler (``dipo.evaluation.generation.generate``: pruned loop, shared prefill,
  grouped decode, no log-probs recorded); ``eval-plain``: the same with ``prune_finished=False, share_prompt=False,
  grouped_attention=False`` (its former path: ``generate`` with ``num_return_sequences=k``).

The paths run batch by batch in turn (each path on batch 1, then on batch 2, ...), so a change of load on a shared
machine hits all of them alike; tokens/s counts the response tokens each path produced (EOS included). The ratios
are to the first path listed.

    python benchmarks/sampling_bench.py [--model smollm2-135m-instruct] [--prompts 64] [--k 8] [--threads 2] \
        [--paths fp32,fp32-per-sample-prefill,fp32-repeat-kv] [--task math --max_new_tokens 256]
    python benchmarks/sampling_bench.py --paths eval,eval-plain ...
"""

from __future__ import annotations

import argparse
import datetime
import time
from dataclasses import replace

import torch

from dipo.evaluation.generation import SamplingConfig, generate, load_model
from dipo.evaluation.harness import hardware_description
from dipo.probe.sampling import batch_plan, sample_batch, sampling_model
from dipo.tasks.registry import get_task

PATHS = (
    "fp32", "fp32-generate", "fp32-per-sample-prefill", "fp32-repeat-kv", "bf16", "bf16+rescore", "eval", "eval-plain"
)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="alias (e.g. qwen2.5-coder-0.5b-instruct)")
    parser.add_argument("--task", default="nl_arithmetic")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--max_new_tokens", type=int, default=16)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--batch_size", type=int, default=8, help="prompts per generate call (x k sequences)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--paths", default=",".join(PATHS[:6]), help=f"comma list of {', '.join(PATHS)}")
    args = parser.parse_args()
    paths = [p for p in args.paths.split(",") if p]
    unknown = sorted(set(paths) - set(PATHS))
    if unknown or not paths:
        parser.error(f"--paths: a comma list of {', '.join(PATHS)} (the first is the baseline); got {args.paths!r}")
    torch.set_num_threads(args.threads)

    model, tokenizer = load_model(args.model, "float32", "cpu")
    start = time.perf_counter()
    sampler = sampling_model(model, "bf16") if any(p.startswith("bf16") for p in paths) else None
    copy_seconds = time.perf_counter() - start
    rows = get_task(args.task).load(limit=args.prompts, seed=0)
    config = SamplingConfig(k=args.k, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=1.0,
                            batch_size=args.batch_size, chat_template=None)  # fmt: skip
    runs = {  # path: (scorer, drawer, pruned loop, one shared prefill per prompt, grouped decode attention)
        "fp32": (model, model, True, True, True),
        "fp32-generate": (model, model, False, True, True),
        "fp32-per-sample-prefill": (model, model, False, False, True),
        "fp32-repeat-kv": (model, model, False, True, False),
        "bf16": (sampler, sampler, True, True, True),
        "bf16+rescore": (model, sampler, True, True, True),
        "eval": (None, model, True, True, True),
        "eval-plain": (None, model, False, False, False),
    }
    seconds = dict.fromkeys(paths, 0.0)
    tokens = dict.fromkeys(paths, 0)
    truncated = dict.fromkeys(paths, 0)
    for b, idx in enumerate(batch_plan(rows, tokenizer, config)):
        for name in paths:
            scorer, drawer, prune, share, grouped = runs[name]
            paths_of = {"prune_finished": prune, "share_prompt": share, "grouped_attention": grouped}
            start = time.perf_counter()
            batch = [rows[i] for i in idx]
            if scorer is None:  # held-out evaluation: batch b seeded with b, as sample_batch seeds it
                gens = generate(drawer, tokenizer, [r.prompt for r in batch], replace(config, seed=b), **paths_of)
                counts = [
                    (n, t)
                    for ns, ts in zip(gens.num_tokens, gens.truncated, strict=True)
                    for n, t in zip(ns, ts, strict=True)
                ]
            else:
                groups = sample_batch(scorer, tokenizer, batch, config, b, drawer, **paths_of)
                counts = [(s["num_tokens"], s["truncated"]) for g in groups for s in g]
            seconds[name] += time.perf_counter() - start
            tokens[name] += sum(n for n, _ in counts)
            truncated[name] += sum(t for _, t in counts)

    print(f"# sampling_bench {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"# {hardware_description()}; model {args.model}; task {args.task}; {len(rows)} prompts x {args.k}")
    print(f"# <= {args.max_new_tokens} tokens; T={args.temperature}; {args.batch_size} prompts per generate call")
    if sampler is not None:
        print(f"# bf16 copy of the weights made in {copy_seconds:.1f} s")
    print(f"{'path':<24} {'tokens':>7} {'seconds':>8} {'tokens/s':>9} {'vs ' + paths[0]:>12} {'truncated':>9}")
    base = tokens[paths[0]] / seconds[paths[0]]
    for name in paths:
        rate = tokens[name] / seconds[name]
        share = truncated[name] / (len(rows) * args.k)
        print(f"{name:<24} {tokens[name]:>7} {seconds[name]:>8.1f} {rate:>9.1f} {rate / base:>11.2f}x {share:>9.0%}")


if __name__ == "__main__":
    main()
