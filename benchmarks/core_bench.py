"""Speed of the DiPO core on one CPU core (issue: ≤ 10 ms per step at the paper's scale, ~16k queued responses).

For queues of 1e3 … 1e6 responses (and 16,384 = 2 × 512 × 16, the paper's scale; 2 batches of N/2) it prints the
median time of ``DiPO.step`` on the current batch, the median time of the exact ``find_threshold`` on the whole
queue, and the brute-force τ* (every cut tried directly, O(N²)) with the ratio brute/fast — measured in this run,
skipped where the brute force would take minutes.

    python benchmarks/core_bench.py [--repeats 20] [--brute-max 100000]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch

from dipo.core import DiPO, DiPOCoreConfig, find_threshold


def brute_force_threshold(s: np.ndarray, c: np.ndarray, chunk: int = 256) -> float:
    """Reference τ*: evaluate the error of every candidate cut directly (vectorised over chunks of candidates)."""
    values = np.unique(s)
    candidates = np.concatenate([[-math.inf], (values[:-1] + values[1:]) / 2, [math.inf]])
    errors = np.empty(candidates.size, dtype=np.int64)
    for start in range(0, candidates.size, chunk):
        taus = candidates[start : start + chunk, None]
        errors[start : start + chunk] = (c[None, :] != (s[None, :] < taus)).sum(1)
    minimisers = candidates[errors == errors.min()]
    return float(minimisers[(minimisers.size - 1) // 2])


def make_batch(n: int, group_size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary rewards with a realistic mix of hard/easy/normal groups; correctness correlated with low PPL."""
    groups = n // group_size
    difficulty = torch.rand(groups, 1, generator=gen)
    log_ppl = torch.rand(groups, group_size, generator=gen) + difficulty
    p_correct = torch.sigmoid(4 * (0.9 - log_ppl))
    rewards = (torch.rand(groups, group_size, generator=gen) < p_correct).float()
    return rewards.flatten(), log_ppl.flatten()


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--brute-max", type=int, default=100_000, help="largest queue for the O(N²) brute force")
    parser.add_argument("--group-size", type=int, default=16)
    args = parser.parse_args()
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, 1 thread, group size {args.group_size}, median of {args.repeats} runs")
    header = f"{'queue':>9} {'DiPO.step ms':>13} {'find_threshold ms':>18} {'brute-force ms':>15} {'brute/fast':>11}"
    print(header)
    for queue in (1_000, 10_000, 16_384, 100_000, 1_000_000):
        batch = queue // 2 // args.group_size * args.group_size
        dipo = DiPO(DiPOCoreConfig())
        r_prev, s_prev = make_batch(batch, args.group_size, gen)
        rewards, log_ppl = make_batch(batch, args.group_size, gen)
        dipo.step(r_prev, s_prev, args.group_size)

        def run_step(dipo=dipo, rewards=rewards, log_ppl=log_ppl) -> None:
            dipo.step(rewards, log_ppl, args.group_size)  # queue keeps 2 batches: previous + this one

        step_ms = median_ms(run_step, args.repeats)
        q_s, q_c = dipo.queue.values()
        fast_ms = median_ms(lambda q_s=q_s, q_c=q_c: find_threshold(q_s, q_c), args.repeats)
        if q_s.numel() <= args.brute_max:
            s_np, c_np = q_s.double().numpy(), q_c.numpy()
            brute_repeats = max(1, min(args.repeats, int(2e9 // max(q_s.numel() ** 2, 1))))
            brute_ms = median_ms(lambda s_np=s_np, c_np=c_np: brute_force_threshold(s_np, c_np), brute_repeats)
            assert brute_force_threshold(s_np, c_np) == find_threshold(q_s, q_c), "fast τ* differs from brute force"
            brute, ratio = f"{brute_ms:15.1f}", f"{brute_ms / fast_ms:10.0f}x"
        else:
            brute, ratio = f"{'skipped':>15}", f"{'-':>11}"
        print(f"{q_s.numel():>9} {step_ms:13.2f} {fast_ms:18.2f} {brute} {ratio}")


if __name__ == "__main__":
    main()
