"""DiPOTrainer overhead: DAPO vs DiPO step time on the same tiny model, same seed, one process (not a test).

Two settings:
* ``logps available``: ``num_iterations=2`` makes TRL compute ``old_per_token_logps``, which DiPO reuses;
* ``extra forward``: ``num_iterations=1`` (TRL has no log-probs), DiPO runs one extra no-grad forward pass.

Runs are interleaved (DAPO, DiPO, DiPO, DAPO, ...), each a fresh trainer of ``--steps-per-round`` steps whose first
generation cycle is dropped as warm-up. The time of one generation cycle (``num_iterations`` optimizer steps: one
generation + scoring + DiPO + the updates) is measured with a ``TrainerCallback``; the script prints the medians and
their ratio. Targets: <= 1.02 (logps available), <= 1.15 (extra forward).

On a shared CPU the cycle times of separate runs scatter by ±10 % or more, so the script also times DiPO's own work
directly (``DiPOTrainer._apply_dipo``: log-PPL, gather, dipo.core step, folding, metrics, and the extra forward when
there is one) and prints the ratio it implies: (DAPO cycle + DiPO work) / DAPO cycle, on CPU time.

    .venv/bin/python benchmarks/trainer_overhead.py [--rounds 10] [--steps-per-round 4] [--hidden 64 --layers 2]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import warnings
from pathlib import Path

import torch

from dipo.benchmarking.timing import StepTimer, TimedDiPOTrainer
from dipo.integrations.trl import DiPOConfig
from dipo.testing import build_dataset, build_tiny_model_dir, kind_reward, load_tiny, tiny_grpo_kwargs


def run_once(
    model_dir: Path, out_dir: Path, preset: str, num_iterations: int, steps: int, args, dipo_work: list[float]
) -> list[tuple[float, float]]:
    """The (wall, cpu) times of the measured generation cycles of one fresh run; DiPO's CPU work per generation batch
    is appended to ``dipo_work``."""
    model, tokenizer = load_tiny(model_dir)
    config = DiPOConfig(
        **tiny_grpo_kwargs(
            out_dir,
            preset=preset,
            per_device_train_batch_size=args.batch,
            num_generations=args.num_generations,
            max_completion_length=args.max_completion_length,
            num_iterations=num_iterations,
            max_steps=steps,
            logging_steps=1,
            # every completion has exactly max_completion_length tokens, so DAPO and DiPO do the same amount of work
            # even though their policies drift apart (truncated completions must then stay in the loss)
            generation_kwargs={"min_new_tokens": args.max_completion_length},
            mask_truncated_completions=False,
        )
    )
    timer = StepTimer()
    trainer = TimedDiPOTrainer(
        model=model,
        reward_funcs=[kind_reward],
        args=config,
        train_dataset=build_dataset(256),
        processing_class=tokenizer,
        callbacks=[timer],
    )
    trainer.train()
    dipo_work.extend(trainer.dipo_work_cpu)
    lengths = {e["completions/mean_length"] for e in trainer.state.log_history if "completions/mean_length" in e}
    assert lengths == {float(args.max_completion_length)}, lengths
    if preset == "dipo":
        assert trainer.last_dipo_batch is not None
        expected = "old" if num_iterations > 1 else "forward"
        assert trainer.last_dipo_batch.ppl_source == expected, trainer.last_dipo_batch.ppl_source
    cycles = [
        tuple(sum(t[k] for t in timer.times[i : i + num_iterations]) for k in (0, 1))
        for i in range(0, len(timer.times), num_iterations)
    ]
    return cycles[1:]  # drop the warm-up cycle


def measure(
    model_dir: Path, work: Path, num_iterations: int, args, dipo_work: list[float]
) -> dict[str, list[list[tuple[float, float]]]]:
    """Per preset, per round, the (wall, cpu) time of each measured generation cycle."""
    times: dict[str, list[list[tuple[float, float]]]] = {"dapo": [], "dipo": []}
    steps = args.steps_per_round * num_iterations
    for r in range(args.rounds):
        order = ("dapo", "dipo") if r % 2 == 0 else ("dipo", "dapo")
        for preset in order:
            out_dir = work / f"{preset}-{num_iterations}-{r}"
            times[preset].append(run_once(model_dir, out_dir, preset, num_iterations, steps, args, dipo_work))
    return times


def summarise(times: dict[str, list[list[tuple[float, float]]]], clock: int) -> tuple[int, float, float, list[float]]:
    """Pooled medians of DAPO and DiPO, and the quartiles of the per-round (paired, adjacent in time) ratios."""
    pooled = {p: [t[clock] for run in runs for t in run] for p, runs in times.items()}
    paired = [
        statistics.median(t[clock] for t in b) / statistics.median(t[clock] for t in a)
        for a, b in zip(times["dapo"], times["dipo"], strict=True)
    ]
    quartiles = statistics.quantiles(paired, n=4) if len(paired) > 1 else [paired[0]] * 3
    return len(pooled["dapo"]), statistics.median(pooled["dapo"]), statistics.median(pooled["dipo"]), quartiles


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps-per-round", type=int, default=4, help="generation cycles per run (first dropped)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: least disturbed by other jobs)")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--max-completion-length", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = build_tiny_model_dir(work / "model", seed=0, hidden_size=args.hidden, num_layers=args.layers)
        print(
            f"tiny Qwen2: hidden {args.hidden}, {args.layers} layers; batch {args.batch} (G={args.num_generations}), "
            f"max_completion_length {args.max_completion_length}; {args.rounds} interleaved rounds x "
            f"{args.steps_per_round - 1} measured cycles per preset; {args.threads} torch thread(s)"
        )
        rows, direct = [], []
        for label, num_iterations, target in (("logps available", 2, 1.02), ("extra forward", 1, 1.15)):
            dipo_work: list[float] = []
            times = measure(model_dir, work, num_iterations, args, dipo_work)
            for k, clock in enumerate(("wall", "cpu")):
                rows.append((label, clock, *summarise(times, k), target))
            dapo_cpu = rows[-1][3]
            work_s = statistics.median(dipo_work)
            direct.append((label, len(dipo_work), work_s, dapo_cpu, (dapo_cpu + work_s) / dapo_cpu))
    print("median time of one generation cycle (generation + scoring + DiPO + num_iterations updates); ratio =")
    print("DiPO/DAPO of the pooled medians; paired = quartiles of the per-round ratios (runs adjacent in time)")
    header = f"{'setting':<16} {'clock':<5} {'cycles':>6} {'DAPO s':>9} {'DiPO s':>9} {'ratio':>7}"
    print(f"{header} {'paired q1 / median / q3':>25} {'target':>8}")
    for label, clock, n, dapo, dipo, (q1, q2, q3), target in rows:
        paired = f"{q1:.3f} / {q2:.3f} / {q3:.3f}"
        print(
            f"{label:<16} {clock:<5} {n:>6} {dapo:>9.4f} {dipo:>9.4f} {dipo / dapo:>7.3f} {paired:>25} "
            f"{'<= ' + str(target):>8}"
        )
    print(
        "\nDiPO's own work per generation cycle (median CPU time of DiPOTrainer._apply_dipo), and the implied ratio:"
    )
    print(f"{'setting':<16} {'batches':>7} {'DiPO work ms':>13} {'DAPO cycle ms':>14} {'implied ratio':>14}")
    for label, n, work_s, dapo_cpu, implied in direct:
        print(f"{label:<16} {n:>7} {1000 * work_s:>13.2f} {1000 * dapo_cpu:>14.2f} {implied:>14.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
