"""Run DiPOTrainer in 2 CPU processes (gloo) under ``accelerate launch`` and dump every rank's DiPO decisions.

Usage: accelerate launch --multi_gpu --num_processes 2 tests/scripts/trl_dipo_ddp.py MODEL_DIR OUT_DIR [ds]
(CPU, gloo). Writes OUT_DIR/rank{i}.pt with, per training batch, the gathered inputs of dipo.core, its decisions and
the local advantages before/after DiPO; with ``ds`` (dynamic sampling on), also every round's keep decision and
global rows and the final local batch. Used by tests/test_trl_distributed.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from dipo.integrations.trl import DiPOConfig, DiPOTrainer
from dipo.testing import build_dataset, kind_reward, load_tiny, tiny_grpo_kwargs


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
                "trl_advantages": r.trl_advantages.cpu(),
                "advantages": r.advantages.cpu(),
                "slice": (r.process_slice.start, r.process_slice.stop),
            }
        )


def main(model_dir: str, out_dir: str, mode: str = "") -> None:
    model, tokenizer = load_tiny(model_dir)
    # 2 processes x 6 rows = 12 rows = 3 prompts x G=4: the middle group spans both processes.
    config = DiPOConfig(
        **tiny_grpo_kwargs(
            out_dir,
            per_device_train_batch_size=6,
            num_generations=4,
            max_steps=3,
            mask_truncated_completions=False,
            dipo_judgment=False,
            preset="dipo",
            dynamic_sampling=mode == "ds",
        )
    )
    trainer = RecordingTrainer(
        model=model,
        reward_funcs=[kind_reward],
        args=config,
        train_dataset=build_dataset(12),
        processing_class=tokenizer,
    )
    trainer.train()
    rank = trainer.accelerator.process_index
    torch.save(
        {
            "records": trainer.records,
            "world_size": trainer.accelerator.num_processes,
            "queue": trainer.dipo.state_dict(),
            "ds_steps": trainer.ds_steps,
        },
        Path(out_dir) / f"rank{rank}.pt",
    )


if __name__ == "__main__":
    main(*sys.argv[1:4])
