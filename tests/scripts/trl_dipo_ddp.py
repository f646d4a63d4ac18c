"""Run DiPOTrainer on 12 rows per step (3 prompts x G=4) and dump every rank's DiPO decisions.

Usage: accelerate launch --multi_gpu --num_processes 2 tests/scripts/trl_dipo_ddp.py MODEL_DIR OUT_DIR 6 [ds] (2 CPU
processes x 6 rows, gloo), or python tests/scripts/trl_dipo_ddp.py MODEL_DIR OUT_DIR 12 (1 process x 12 rows).
Writes OUT_DIR/rank{i}.pt with, per training batch, the gathered inputs of dipo.core, its decisions, its logged
metrics and the local advantages before/after DiPO, and the run's ``log_history``; with ``ds`` (dynamic sampling on,
sampled completions), also every round's keep decision and global rows and the final local batch. Used by
tests/test_trl_distributed.py.

Completions come from a deterministic ``rollout_func`` (a function of the prompt and of the row's place in its
group, whatever the process) and the learning rate is 0, so that the 1- and 2-process runs see the same data: same
prompts, completions, rewards and (same weights) perplexities.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from dipo.integrations.trl import DiPOConfig, DiPOTrainer
from dipo.testing import build_dataset, kind_reward, load_tiny, tiny_grpo_kwargs

ROWS_PER_STEP = 12
G = 4
COMPLETION_LENGTH = 6


def dipo_config(out_dir: str, per_device: int, ds: bool = False) -> DiPOConfig:
    if ds:  # sampled completions, judgment off: BRR acts and dynamic sampling refills
        return DiPOConfig(
            **tiny_grpo_kwargs(
                out_dir,
                per_device_train_batch_size=per_device,
                num_generations=G,
                max_steps=3,
                mask_truncated_completions=False,
                dipo_judgment=False,
                preset="dipo",
                dynamic_sampling=True,
            )
        )
    return DiPOConfig(
        **tiny_grpo_kwargs(
            out_dir,
            per_device_train_batch_size=per_device,
            num_generations=G,
            max_completion_length=COMPLETION_LENGTH,
            max_steps=3,
            learning_rate=0.0,
            mask_truncated_completions=False,
            dipo_judgment_confidence=None,
            preset="dipo",
        )
    )


def deterministic_rollout(prompts: list[str], trainer: DiPOTrainer) -> dict:
    """Completions that depend only on the prompt and the row's position in its group (``global row % G``): the
    same in a 1-process and a 2-process run. The first token's parity (``kind_reward`` on mixed prompts) varies
    with the position, so mixed prompts give mixed groups."""
    tokenizer = trainer.processing_class
    first_row = trainer.accelerator.process_index * len(prompts)
    prompt_ids, completion_ids = [], []
    for i, prompt in enumerate(prompts):
        position = (first_row + i) % G
        seed = sum(map(ord, prompt))
        prompt_ids.append(tokenizer(prompt)["input_ids"])
        completion_ids.append([3 + (seed + 7 * position + 5 * k) % 23 for k in range(COMPLETION_LENGTH)])
    return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": None}


class RecordingTrainer(DiPOTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.records, self.ds_steps, self._rounds = [], [], []

    def _ds_keep(self, rewards_per_func):
        keep, kept_by_brr = super()._ds_keep(rewards_per_func)
        self._rounds.append({"keep": keep.cpu(), "kept_by_brr": kept_by_brr.cpu()})
        return keep, kept_by_brr

    def _ds_gather_rows(self, output):
        gathered = super()._ds_gather_rows(output)
        self._rounds[-1]["rows"] = {k: v.cpu() for k, v in gathered.items()}
        return gathered

    def _dynamic_sampling(self, inputs):
        self._rounds = []
        output = super()._dynamic_sampling(inputs)
        local = {k: v.cpu() for k, v in output.items()}
        self.ds_steps.append({"rounds": self._rounds, "output": local})
        return output

    def _apply_dipo(self, output, rewards_per_func):
        super()._apply_dipo(output, rewards_per_func)
        r = self.last_dipo_batch
        self.records.append(
            {
                "rewards": r.rewards.cpu(),
                "log_ppl": r.log_ppl.cpu(),
                "valid": r.valid.cpu(),
                "token_counts": r.token_counts.cpu(),
                "advantage_delta": r.output.advantage_delta.cpu(),
                "realloc_mask": r.output.realloc_mask.cpu(),
                "group_types": r.output.group_types.cpu(),
                "threshold": r.output.threshold,
                "judgment_passed": bool(r.output.judgment.passed),
                "metrics": {k: float(v) for k, v in r.output.metrics().items()},
                "trl_advantages": r.trl_advantages.cpu(),
                "advantages": r.advantages.cpu(),
                "slice": (r.process_slice.start, r.process_slice.stop),
            }
        )


def main(model_dir: str, out_dir: str, per_device: str = "6", mode: str = "") -> None:
    model, tokenizer = load_tiny(model_dir)
    # 2 processes x 6 rows = 12 rows = 3 prompts x G=4: the middle group spans both processes.
    trainer = RecordingTrainer(
        model=model,
        reward_funcs=[kind_reward],
        args=dipo_config(out_dir, int(per_device), ds=mode == "ds"),
        train_dataset=build_dataset(12),
        processing_class=tokenizer,
        rollout_func=None if mode == "ds" else deterministic_rollout,
    )
    trainer.train()
    rank = trainer.accelerator.process_index
    torch.save(
        {
            "records": trainer.records,
            "world_size": trainer.accelerator.num_processes,
            "queue": trainer.dipo.state_dict(),
            "ds_steps": trainer.ds_steps,
            "log_history": trainer.state.log_history,
        },
        Path(out_dir) / f"rank{rank}.pt",
    )


if __name__ == "__main__":
    main(*sys.argv[1:5])
