"""Tokens/s of ``dipo probe``'s sampling paths, measured in one run on the same prompts.

- ``fp32``: the fp32 policy samples and records its log-probs as it goes (``--sample_dtype fp32``);
- ``fp32-per-sample-prefill``: the same, but ``generate`` prefills each of the k copies of a prompt (what
  ``num_return_sequences=k`` does) instead of one shared prefill per prompt (``shared_prompt_cache``);
- ``fp32-repeat-kv``: the same, but decode steps use transformers' sdpa, which copies the key/value cache once per
  query head (``repeat_kv``), instead of ``dipo.evaluation.attention.grouped_decode_sdpa``;
- ``bf16``: a bf16 copy samples and its own logits give the log-probs (fast, but not the fp32 policy's PPL);
- ``bf16+rescore``: a bf16 copy samples, one teacher-forced fp32 pass recomputes the log-probs (``--sample_dtype
  bf16``, the default: the PPL is the fp32 policy's).

The paths run batch by batch in turn (each path on batch 1, then on batch 2, ...), so a change of load on a shared
machine hits all of them alike; tokens/s counts the response tokens each path produced (EOS included).

    python benchmarks/sampling_bench.py [--model smollm2-135m-instruct] [--prompts 64] [--k 8] [--threads 2] \
        [--paths fp32,fp32-per-sample-prefill,fp32-repeat-kv] [--task math --max_new_tokens 256]
"""

from __future__ import annotations

import argparse
import datetime
import time

import torch

from dipo.evaluation.generation import SamplingConfig, load_model
from dipo.evaluation.harness import hardware_description
from dipo.probe.sampling import batch_plan, sample_batch, sampling_model
from dipo.tasks.registry import get_task

PATHS = ("fp32", "fp32-per-sample-prefill", "fp32-repeat-kv", "bf16", "bf16+rescore")


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
    parser.add_argument("--paths", default=",".join(PATHS), help=f"comma list of {', '.join(PATHS)}; fp32 first")
    args = parser.parse_args()
    paths = [p for p in args.paths.split(",") if p]
    unknown = sorted(set(paths) - set(PATHS))
    if unknown or paths[:1] != ["fp32"]:
        parser.error(f"--paths: a comma list of {', '.join(PATHS)}, fp32 (the baseline) first; got {args.paths!r}")
    torch.set_num_threads(args.threads)

    model, tokenizer = load_model(args.model, "float32", "cpu")
    start = time.perf_counter()
    sampler = sampling_model(model, "bf16") if any(p.startswith("bf16") for p in paths) else None
    copy_seconds = time.perf_counter() - start
    rows = get_task(args.task).load(limit=args.prompts, seed=0)
    config = SamplingConfig(k=args.k, max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=1.0,
                            batch_size=args.batch_size, chat_template=None)  # fmt: skip
    runs = {  # path: (scorer, drawer, one shared prefill per prompt, grouped decode attention)
        "fp32": (model, model, True, True),
        "fp32-per-sample-prefill": (model, model, False, True),
        "fp32-repeat-kv": (model, model, True, False),
        "bf16": (sampler, sampler, True, True),
        "bf16+rescore": (model, sampler, True, True),
    }
    seconds = dict.fromkeys(paths, 0.0)
    tokens = dict.fromkeys(paths, 0)
    truncated = dict.fromkeys(paths, 0)
    for b, idx in enumerate(batch_plan(rows, tokenizer, config)):
        for name in paths:
            scorer, drawer, share, grouped = runs[name]
            start = time.perf_counter()
            batch = [rows[i] for i in idx]
            groups = sample_batch(
                scorer, tokenizer, batch, config, b, drawer, share_prompt=share, grouped_attention=grouped
            )
            seconds[name] += time.perf_counter() - start
            tokens[name] += sum(s["num_tokens"] for g in groups for s in g)
            truncated[name] += sum(s["truncated"] for g in groups for s in g)

    print(f"# sampling_bench {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    print(f"# {hardware_description()}; model {args.model}; task {args.task}; {len(rows)} prompts x {args.k}")
    print(f"# <= {args.max_new_tokens} tokens; T={args.temperature}; {args.batch_size} prompts per generate call")
    if sampler is not None:
        print(f"# bf16 copy of the weights made in {copy_seconds:.1f} s")
    print(f"{'path':<24} {'tokens':>7} {'seconds':>8} {'tokens/s':>9} {'vs fp32':>8} {'truncated':>9}")
    base = tokens["fp32"] / seconds["fp32"]
    for name in paths:
        rate = tokens[name] / seconds[name]
        share = truncated[name] / (len(rows) * args.k)
        print(f"{name:<24} {tokens[name]:>7} {seconds[name]:>8.1f} {rate:>9.1f} {rate / base:>7.2f}x {share:>9.0%}")


if __name__ == "__main__":
    main()
