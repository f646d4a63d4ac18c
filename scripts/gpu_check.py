"""GPU validation of dipo (one NVIDIA GPU, no network, <= 8 minutes); also runs on CPU at tiny sizes (CI).

Three measurements, all in one process, all written to ``OUT/gpu_check.json`` after every step (a timeout still
leaves partial results), plus PNGs, ``OUT/gpu_results.md`` (the tables of ``docs/results/gpu.md``, filled) and a
printed summary:

1. **fastgen** — ``DiPOConfig(fast_generation=True)`` (static KV cache + compiled decoding, bucketed prompts)
   against TRL's default ``generate`` path on a SmolLM2-135M-shaped policy (real weights with ``--policy`` or when
   the SmolLM2 asset is installed, random init otherwise; bf16): rollout tokens/s and step time, same preset, same
   batch. Sampling semantics: the configs differ only in ``cache_implementation`` / ``disable_compile``; the
   sampled tokens' log-probs from each path's own logits are compared with TRL's loss-side log-probs (a full
   reference forward, temperature applied), and greedy completions of both paths are compared token by token.
2. **overhead** — DAPO vs DiPO step time on the same policy object (so one compilation), rounds interleaved
   (DAPO, DiPO, DiPO, DAPO, ...), first step of every round dropped; ratio of the medians (target <= 1.02) and the
   directly timed DiPO work per step (PPL, extra forward, dipo.core, folding).
3. **learning** — the demo (``dipo.demo``: reversed-digit addition) with a larger from-scratch model, supervised warm
   start on the device, then GRPO / DAPO / DiPO for several seeds through the demo runner (seed-major order, so a
   time budget cuts whole seeds); held-out greedy accuracy and mean@k.

A thin driver: the timing policy, trainers and checks live in :mod:`dipo.benchmarking`, the learning runs are the
demo's (:func:`dipo.demo.runner.run_one` with ``DemoConfig(device=...)``), the report is
:mod:`dipo.reports.gpu_report`. Needs the package installed (``pip install -e .``) or ``PYTHONPATH=src``
(``scripts/gpu_check.sh`` sets it).

    python scripts/gpu_check.py --out results/gpu            # size "full" on CUDA, "tiny" on CPU
    scripts/gpu_check.sh results/gpu                         # same, after installing wheels from .whl/ if present
    python scripts/gpu_check.py --out /tmp/g --device cpu --size tiny --parts fastgen
"""

from __future__ import annotations

import argparse
import copy
import gc
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from dipo.benchmarking.checks import greedy_check, logprob_check
from dipo.benchmarking.policy import BenchSizes, PolicyBench, PolicyShape
from dipo.benchmarking.timing import dynamo_graphs, median, quiet_transformers
from dipo.demo.model import ModelSpec
from dipo.demo.runner import DemoConfig
from dipo.demo.warmstart import SFTConfig
from dipo.reports.gpu_report import Results, learning_summary, log, print_summary, render_markdown, write_plots

PARTS = ("fastgen", "overhead", "learning")
TARGETS = {"overhead_ratio_max": 1.02, "rollout_speedup_min": 5.0, "step_speedup_min": 3.0}
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


# ------------------------------------------------------------------------------------------------ sizes
def _learning(steps: int, prompts: int, generations: int, seeds: tuple[int, ...], per_level: int, k: int,
              model: ModelSpec, sft: SFTConfig) -> DemoConfig:  # fmt: skip
    """The demo's configuration for the learning part (only the final evaluation matters here)."""
    return DemoConfig(
        methods=("grpo", "dapo", "dipo"), seeds=seeds, steps=steps, prompts_per_step=prompts,
        num_generations=generations, warmup_steps=min(10, steps // 10), eval_every=steps,
        eval_per_level=max(1, per_level // 10), final_eval_per_level=per_level, k=k, model=model, sft=sft,
        instruments=False,
    )  # fmt: skip


@dataclass(frozen=True)
class Sizes:
    """Everything that sets the cost of a run. ``full`` is sized for <= 8 minutes on one H100/H200."""

    bench: BenchSizes
    # learning: the demo's recipe with an 8x larger model (1.05 M parameters) and twice the RL steps. This warm start,
    # trained on CPU, had held-out mean@8 0.97 / 0.95 / 0.07 / 0.01 / 0.00 on levels 1-5: easy, mixed and hard groups
    # in one batch (the regime DiPO acts on)
    learning: DemoConfig = field(
        default_factory=lambda: _learning(200, 32, 8, (0, 1, 2), 100, 8, ModelSpec(128, 512, 4, 4), SFTConfig())
    )

    def as_dict(self) -> dict[str, Any]:
        """The sizes as recorded in ``gpu_check.json`` (the learning part under the report's ``rl_*`` names)."""
        cfg = self.learning
        return {
            **asdict(self.bench),
            "model": cfg.model.as_dict(),
            "sft_steps": cfg.sft.steps,
            "rl_steps": cfg.steps,
            "rl_prompts_per_step": cfg.prompts_per_step,
            "rl_generations": cfg.num_generations,
            "rl_completion_len": cfg.max_completion_length,
            "eval_per_level": cfg.final_eval_per_level,
            "seeds": list(cfg.seeds),
            "k": cfg.k,
        }


def _tiny_sizes() -> Sizes:
    policy = PolicyShape(32, 64, 2, 2, 1, 512)
    bench = BenchSizes(policy, 8, 8, 4, 4, 16, fastgen_steps=2, overhead_rounds=1, overhead_steps_per_round=2)
    sft = SFTConfig(steps=60, batch_size=32, learning_rate=3e-3)
    return Sizes(bench, _learning(2, 4, 4, (0,), 4, 2, ModelSpec(32, 64, 2, 2), sft))


SIZES = {"full": Sizes(BenchSizes()), "tiny": _tiny_sizes()}


# ------------------------------------------------------------------------------------------------ 1. fast rollouts
def part_fastgen(bench: PolicyBench, results: Results) -> None:
    """Part 1: fast rollouts against TRL's default path, with the log-prob and greedy checks."""
    s = bench.sizes
    report: dict[str, Any] = {"weights": bench.weights, "preset": "dipo"}
    for name, fast in (("fast", True), ("default", False)):
        log(f"fastgen: {name} path, {s.fastgen_steps} steps (first = warm-up)")
        rec = bench.run("dipo", fast, s.fastgen_steps)
        timed = slice(1, None)
        tok_s = [n / t for t, n in zip(rec["rollout_s"][timed], rec["rollout_tokens"][timed], strict=True)]
        rec.update(
            first_step_s=rec["step_s"][0],
            median_step_s=median(rec["step_s"][timed]),
            median_rollout_s=median(rec["rollout_s"][timed]),
            median_rollout_tokens_per_s=median(tok_s),
        )
        report[name] = rec
        if fast:
            bench.fast_generation_config = copy.deepcopy(bench.last_trainer.generation_config)
            report["compiled"] = hasattr(bench.model, "_compiled_call")
            results.set("fastgen", report)
        else:
            bench.default_generation_config = copy.deepcopy(bench.last_trainer.generation_config)
        log(
            f"fastgen: {name}: step {rec['median_step_s']:.3f} s, rollout {rec['median_rollout_tokens_per_s']:.0f} "
            f"tok/s (first step {rec['first_step_s']:.1f} s)"
        )
        results.set("fastgen", report)
    fast_cfg, default_cfg = bench.fast_generation_config, bench.default_generation_config
    a, b = default_cfg.to_dict(), fast_cfg.to_dict()
    report["generation_config_diff"] = {
        k: [a.get(k), b.get(k)] for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)
    }
    report["rollout_speedup"] = (
        report["fast"]["median_rollout_tokens_per_s"] / report["default"]["median_rollout_tokens_per_s"]
    )
    report["step_speedup"] = report["default"]["median_step_s"] / report["fast"]["median_step_s"]
    results.set("fastgen", report)

    trainer = bench.trainers[("dipo", True)]  # both configs run on this model with its bucketed prompt padding
    prompts = list(bench.dataset["prompt"][: s.prompts_per_step])
    log("fastgen: log-prob and greedy checks")
    report["logprob_check"] = {
        "fast": logprob_check(trainer, fast_cfg, prompts, seed=1),
        "default": logprob_check(trainer, default_cfg, prompts, seed=1),
    }
    fast_mean = report["logprob_check"]["fast"]["mean_abs_diff"]
    default_mean = report["logprob_check"]["default"]["mean_abs_diff"]
    # The fast path must not be less exact than TRL's default path (bf16 decoding is never bit-exact on GPUs).
    report["logprob_check"]["pass"] = bool(fast_mean <= 1.5 * default_mean + 1e-3)
    report["greedy_check"] = greedy_check(trainer, {"default": default_cfg, "fast": fast_cfg}, prompts)
    report["compiled_graphs_total"] = dynamo_graphs()
    report["targets_met"] = {
        "rollout_speedup": report["rollout_speedup"] >= TARGETS["rollout_speedup_min"],
        "step_speedup": report["step_speedup"] >= TARGETS["step_speedup_min"],
    }
    results.set("fastgen", report)
    bench.release()


# ------------------------------------------------------------------------------------------------ 2. overhead
def part_overhead(bench: PolicyBench, results: Results, fast: bool) -> None:
    """Part 2: DAPO vs DiPO step time on the same policy, rounds interleaved."""
    s = bench.sizes
    order = ["dapo", "dipo"]
    report: dict[str, Any] = {
        "path": "fast_generation" if fast else "default generate",
        "weights": bench.weights,
        "note": "num_iterations=1, no vLLM: DiPO runs one extra no-grad forward per generation batch",
        "rounds": [],
    }
    for preset in order:  # warm-up rounds (compilation, allocator)
        log(f"overhead: warm-up round {preset}")
        bench.run(preset, fast, 2)
    bench.release()
    times: dict[str, list[float]] = {"dapo": [], "dipo": []}
    work: list[float] = []
    for r in range(s.overhead_rounds):
        for preset in order if r % 2 == 0 else order[::-1]:
            rec = bench.run(preset, fast, s.overhead_steps_per_round)
            kept = rec["step_s"][1:]
            times[preset].extend(kept)
            work.extend(rec["dipo_work_s"][1:])
            report["rounds"].append({"preset": preset, "step_s": kept})
            log(f"overhead: round {r + 1}/{s.overhead_rounds} {preset}: median step {median(kept):.3f} s")
            bench.release()
        report.update(
            dapo_median_step_s=median(times["dapo"]),
            dipo_median_step_s=median(times["dipo"]),
            ratio=median(times["dipo"]) / median(times["dapo"]),
            dipo_work_median_ms=1000 * median(work),
        )
        results.set("overhead", report)
    dapo_rounds = [median(x["step_s"]) for x in report["rounds"] if x["preset"] == "dapo"]
    dipo_rounds = [median(x["step_s"]) for x in report["rounds"] if x["preset"] == "dipo"]
    report["median_round_ratio"] = median([b / a for a, b in zip(dapo_rounds, dipo_rounds, strict=True)])
    report["target_met"] = report["ratio"] <= TARGETS["overhead_ratio_max"]
    report["compiled_graphs_total"] = dynamo_graphs()
    results.set("overhead", report)


# ------------------------------------------------------------------------------------------------ 3. learning
def heldout_eval(model: Any, tokenizer: Any, cfg: DemoConfig, seed: int) -> dict[str, Any]:
    """Greedy accuracy and mean@k (temperature 1) on the final held-out set, on the model's device."""
    from dipo.demo.evaluate import evaluate

    items = cfg.task.heldout_set(cfg.final_eval_per_level, seed=2)
    return evaluate(model, tokenizer, items, k=cfg.k, max_new_tokens=cfg.max_completion_length, seed=seed).as_dict()


def part_learning(sizes: Sizes, device: torch.device, work: Path, results: Results, deadline: float, workers: int):
    """Part 3: warm start on the device, then the demo's GRPO / DAPO / DiPO runs (``dipo.demo.runner.run_one``)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dipo.demo.methods import resolve_methods
    from dipo.demo.warmstart import load_or_train_warmstart

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    cfg = replace(sizes.learning, device=device.type)
    report: dict[str, Any] = {"task": asdict(cfg.task), "sizes": sizes.as_dict(), "runs": [], "skipped": []}
    log(f"learning: warm start ({cfg.sft.steps} SFT steps)")
    warm, info = load_or_train_warmstart(cfg.task, cfg.model, cfg.sft, use_cache=False, device=device.type)
    model = AutoModelForCausalLM.from_pretrained(warm).to(device)
    info["heldout"] = heldout_eval(model, AutoTokenizer.from_pretrained(warm), cfg, 12_345)
    report["warmstart"] = info
    del model
    log(f"learning: warm start {info['sft_seconds']:.1f} s, {info['heldout']}")
    results.set("learning", report)
    jobs = [(seed, m) for seed in cfg.seeds for m in resolve_methods(list(cfg.methods))]  # seed-major: cut whole seeds
    payloads = [dict(cfg=cfg, method=m, seed=s, warm=str(warm), work=str(work), deadline=deadline) for s, m in jobs]
    order = {(seed, m.name): i for i, (seed, m) in enumerate(jobs)}

    def collect(run: dict[str, Any]) -> None:
        if run.get("skipped"):
            report["skipped"].append(f"{run['method']}-s{run['seed']}")
            log(f"learning: {run['method']} seed {run['seed']} skipped (time budget)")
        else:
            report["runs"].append(run)
            log(
                f"learning: {run['method']} seed {run['seed']}: mean@{cfg.k} {run['final']['mean_at_k']:.3f}, "
                f"greedy {run['final']['greedy']:.3f} ({run['seconds']:.1f} s)"
            )
        report["runs"].sort(key=lambda r: order[(r["seed"], r["method"])])
        report["summary"] = learning_summary(report["runs"])
        results.set("learning", report)

    log(f"learning: {len(jobs)} RL runs, {workers} at a time")
    if workers <= 1:
        for payload in payloads:
            collect(learning_job(payload))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            for future in as_completed([pool.submit(learning_job, payload) for payload in payloads]):
                collect(future.result())
    results.set("learning", report)


def learning_job(payload: dict[str, Any]) -> dict[str, Any]:
    """One demo RL run (in-process or in a worker process); skipped once the wall-clock ``deadline`` has passed."""
    from dipo.demo.runner import run_one

    cfg, method, seed = payload["cfg"], payload["method"], payload["seed"]
    if time.time() > payload["deadline"]:
        return {"method": method.name, "seed": seed, "skipped": True}
    quiet_transformers()
    if cfg.device == "cpu":
        torch.set_num_threads(1)
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
    record = run_one(cfg, method, seed, payload["warm"], payload["work"])
    history = [row for row in record["history"] if "reward" in row]
    applied = [row["dipo/applied"] for row in history if not math.isnan(row.get("dipo/applied", math.nan))]
    return {
        "method": method.name,
        "seed": seed,
        "final": record["final"],
        "train_reward": [row["reward"] for row in history],
        "dipo_applied_frac": (sum(applied) / len(applied)) if applied else None,
        "seconds": record["seconds"],
    }


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="Folder for gpu_check.json, PNGs, gpu_results.md.")
    parser.add_argument("--device", default="auto", help="auto (cuda if available) | cuda | cpu")
    parser.add_argument("--size", default="auto", choices=["auto", *SIZES], help="auto: full on CUDA, tiny on CPU")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--policy", default=None, help="transformers folder with real SmolLM2-135M weights")
    parser.add_argument(
        "--overhead-path", default="fast", choices=["fast", "default"], help="generation path of the overhead part"
    )
    parser.add_argument(
        "--budget-s", type=float, default=420.0, help="learning runs not started this many seconds in are skipped"
    )
    parser.add_argument(
        "--learning-workers", type=int, default=None, help="parallel RL runs (default: 3 on CUDA, 1 on CPU)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="learning seeds (default: by size)")
    parser.add_argument(
        "--cpu-eager-compile",
        action="store_true",
        help="test aid: on CPU, trace the fast path's decoding step with torch.compile's eager backend (transformers "
        "compiles on CUDA/XPU only), to check that it compiles once",
    )
    parser.add_argument(
        "--cpu-threads", type=int, default=1, help="torch threads on CPU (1: no contention on shared CI cores)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.monotonic()

    def elapsed() -> float:
        return time.monotonic() - start

    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"gpu_check: unknown part(s) {unknown}; choose from {', '.join(PARTS)}")
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.cpu_threads)
    size = args.size if args.size != "auto" else ("full" if device.type == "cuda" else "tiny")
    sizes = SIZES[size]
    if args.seeds is not None:
        sizes = replace(sizes, learning=replace(sizes.learning, seeds=tuple(args.seeds)))
    for name, value in OFFLINE_ENV.items():  # the GPU machine has no network (learning workers inherit this)
        os.environ.setdefault(name, value)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))  # trainer folders and the warm start; not results
    quiet_transformers()

    import transformers
    import trl

    meta = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join(["python", *sys.argv]) if argv is None else " ".join(["gpu_check.py", *argv]),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "size": size,
        "sizes": sizes.as_dict(),
        "parts": parts,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "python": platform.python_version(),
        "targets": TARGETS,
    }
    results = Results(args.out, meta)
    log(f"device {meta['device_name']} ({device}), size {size}, parts {parts}; writing {args.out}/gpu_check.json")
    try:
        if "fastgen" in parts or "overhead" in parts:
            overhead_fast = args.overhead_path == "fast"
            keys = [("dipo", True), ("dipo", False)] if "fastgen" in parts else []
            keys += [(p, overhead_fast) for p in ("dapo", "dipo") if "overhead" in parts]
            bench = PolicyBench(
                sizes.bench, device, work, args.policy, list(dict.fromkeys(keys)), eager_compile=args.cpu_eager_compile
            )
            log(f"policy: {bench.weights}, {sum(p.numel() for p in bench.model.parameters()):,} parameters")
            if "fastgen" in parts:
                part_fastgen(bench, results)
            if "overhead" in parts:
                part_overhead(bench, results, fast=overhead_fast)
            del bench
            gc.collect()
        if "learning" in parts:
            workers = args.learning_workers or (3 if device.type == "cuda" else 1)
            part_learning(
                sizes, device, work, results, deadline=time.time() + args.budget_s - elapsed(), workers=workers
            )
        results.data["status"] = "done"
    except BaseException as err:
        results.data["status"] = f"failed: {type(err).__name__}: {err}"
        raise
    finally:
        results.data["elapsed_s"] = time.monotonic() - start
        if device.type == "cuda":
            results.data["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        results.save()
        results.data["plots"] = write_plots(results.data, args.out)
        results.save()
        (args.out / "gpu_results.md").write_text(render_markdown(results.data))
        print_summary(results.data)
        shutil.rmtree(work, ignore_errors=True)
        log(f"{results.data['status']} in {results.data['elapsed_s']:.0f} s; see {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
