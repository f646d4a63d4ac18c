"""``DiPOTrainer``: TRL's ``GRPOTrainer`` with DiPO advantages (a thin adapter around :class:`dipo.core.DiPO`).

The parent builds the batch, scores it and computes GRPO/DAPO advantages; this class only post-processes:

1. ``_calculate_rewards`` keeps the raw per-function rewards (gathered over processes by TRL);
2. ``_generate_and_score_completions`` takes the per-token log-probs of the sampling policy (TRL's old or
   sampler log-probs, or one extra no-grad pass), reduces them to per-response log-PPL over the loss tokens (tool
   output excluded), gathers them, runs ``dipo.core.DiPO.step`` on the global batch (identical on every rank), adds
   ``advantage_delta`` to TRL's local advantages and logs the spec §10 diagnostics as ``dipo/…`` metrics;
3. the PPL queue is saved with every checkpoint (before the trainer state, so that a checkpoint is complete only
   with it) and restored on resume, from the newest complete checkpoint for ``resume_from_checkpoint=True``.

All algorithm logic (grouping, threshold, judgment, BRR, normalisation) lives in :mod:`dipo.core`.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import warnings
from dataclasses import dataclass
from typing import Any

import datasets
import torch
from torch import Tensor
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOConfig, GRPOTrainer
from trl.extras.profiling import profiling_decorator
from trl.models.utils import disable_gradient_checkpointing
from trl.rewards import get_soft_overlong_punishment

from dipo.core import DiPO, DiPOStepOutput, perplexity_bonus_delta, sequence_log_ppl
from dipo.integrations._kit import (
    StepInputs,
    VerifierRewards,
    choose_log_probs,
    compose_verifier_rewards,
    ds_metrics,
    infinite_verifier_value,
    non_binary_verifier_reward,
    run_step,
    step_metrics,
)
from dipo.integrations._kit.dynamic_sampling import kept_groups, queue_kept_groups
from dipo.integrations._kit.reward_funcs import checked_reward_func
from dipo.integrations._kit.state import (
    DIPO_STATE_NAME,
    restore_dipo_state,
    save_state_file,
    state_path,
    state_payload,
)
from dipo.integrations.trl._dynamic_sampling import (
    ROW_KEYS,
    assemble,
    check_batch_keys,
    refill_rows,
    select_groups,
)
from dipo.integrations.trl._version import check_trl_version
from dipo.integrations.trl.checkpoints import (
    TRAINER_STATE_NAME,
    checkpoint_problem,
    newest_complete_checkpoint,
    no_complete_checkpoint_message,
)
from dipo.integrations.trl.config import DiPOConfig, trl_option_name

logger = logging.getLogger(__name__)

#: Warn about masked truncated completions at most once per this many optimizer steps.
TRUNCATION_WARN_EVERY_STEPS = 50

#: TRL loss types normalised by a token count (the others average per sequence or use a constant).
TOKEN_NORMALISED_LOSSES = ("dapo", "bnpo", "cispo", "vespo")

# Multimodal keys of TRL's generation output that the policy forward needs (as in GRPOTrainer._compute_loss).
_FORWARD_KEYS = (
    "pixel_values",
    "image_grid_thw",
    "num_images",
    "pixel_attention_mask",
    "spatial_shapes",
    "num_tiles",
    "image_sizes",
    "token_type_ids",
    "mm_token_type_ids",
    "image_position_ids",
)


def _keep_one_input_grad_hook(model: Any) -> None:
    """Make ``model.enable_input_require_grads`` replace its embedding hook instead of adding one more.

    transformers' ``gradient_checkpointing_enable`` registers a new input-embedding forward hook on every call and
    ``gradient_checkpointing_disable`` leaves it in place (transformers 5.10 to 5.17). TRL switches checkpointing off
    and on around every generation, so the hooks pile up, and ``torch.compile`` (which guards on their number)
    recompiles the decoding step at every generation: ``fast_generation`` would compile at every step.
    """
    enable = getattr(model, "enable_input_require_grads", None)
    if enable is None or not hasattr(model, "disable_input_require_grads") or getattr(enable, "_dipo_once", False):
        return

    def enable_once() -> None:
        model.disable_input_require_grads()
        enable()

    enable_once._dipo_once = True  # type: ignore[attr-defined]
    model.enable_input_require_grads = enable_once


def _check_prompt_column(dataset: Any, name: str) -> None:
    """GRPO generates from the ``prompt`` column: say so at construction rather than with TRL's KeyError at step 1."""
    columns = getattr(dataset, "column_names", None)
    if dataset is None or not isinstance(columns, (list, tuple)):  # None, or a streaming dataset of unknown columns
        return
    if "prompt" not in columns:
        raise ValueError(
            f"DiPOTrainer: {name} has no 'prompt' column (its columns: {list(columns)}). GRPO/DiPO generates the "
            "completions from the 'prompt' column (plain text or a list of chat messages); rename yours, e.g. "
            f"{name}.rename_column('question', 'prompt')."
        )


@dataclass
class DiPOBatchRecord:
    """What DiPO saw and decided for the last training batch (global tensors unless marked local)."""

    rewards: Tensor  # [N] verifier rewards R fed to dipo.core
    log_ppl: Tensor  # [N] per-response log-PPL (NaN: no valid token)
    valid: Tensor  # [N] bool, False for rows every verifier reward function skipped (NaN reward)
    token_counts: Tensor  # [N] loss tokens per response
    output: DiPOStepOutput | None  # dipo.core's decisions (None when only the CDE-style bonus runs)
    trl_advantages: Tensor  # [B_local] TRL's own advantages before DiPO (local rows)
    advantages: Tensor  # [B_local] advantages handed to the loss (local rows)
    process_slice: slice  # the local rows inside the global batch
    ppl_source: str  # "old", "sampling" or "forward"


class DiPOTrainer(GRPOTrainer):
    """Drop-in replacement for ``trl.GRPOTrainer`` that adds DiPO (arXiv 2604.13902) on top of GRPO/DAPO.

    Same constructor as ``GRPOTrainer``; ``args`` may be a :class:`DiPOConfig` (presets ``grpo`` / ``dapo`` /
    ``dipo``) or a plain ``GRPOConfig`` (kept as given, DiPO with α = 0.1 added). Scaling (DDP, DeepSpeed, FSDP,
    vLLM) is TRL's own.
    """

    _tag_names = ["trl", "grpo", "dipo"]
    _name = "DiPO"

    def __init__(
        self, model: Any, reward_funcs: Any = None, args: GRPOConfig | None = None, *more_args: Any, **kwargs: Any
    ) -> None:
        check_trl_version()
        if more_args:  # GRPOTrainer's later positional parameters (train_dataset, eval_dataset, ...) by name
            names = list(inspect.signature(GRPOTrainer.__init__).parameters)[4:]
            if len(more_args) > len(names):
                raise TypeError(f"DiPOTrainer takes at most {len(names) + 3} positional arguments.")
            kwargs.update(zip(names, more_args, strict=False))
        if args is None:
            name = model if isinstance(model, str) else getattr(model.config, "_name_or_path", "model")
            args = DiPOConfig(f"{str(name).split('/')[-1]}-DiPO")
        elif not isinstance(args, DiPOConfig):
            if not isinstance(args, GRPOConfig):
                raise TypeError(
                    f"DiPOTrainer: args must be a DiPOConfig or GRPOConfig, got {type(args).__name__}. "
                    "Build it with dipo.DiPOConfig(output_dir=..., preset='dipo', ...)."
                )
            args = DiPOConfig.from_grpo_config(args)

        _check_prompt_column(kwargs.get("train_dataset"), "train_dataset")
        eval_dataset = kwargs.get("eval_dataset")
        for key, dataset in eval_dataset.items() if isinstance(eval_dataset, dict) else [(None, eval_dataset)]:
            _check_prompt_column(dataset, "eval_dataset" if key is None else f"eval_dataset[{key!r}]")

        self._dipo_skip_reward_column: int | None = None
        if args.soft_overlong_cache is not None:
            reward_funcs, kwargs = self._add_soft_overlong_reward(reward_funcs, args, kwargs)

        super().__init__(model, reward_funcs=reward_funcs, args=args, **kwargs)
        if args.fast_generation:
            self._enable_fast_generation()
        self.reward_funcs = [
            func if isinstance(func, torch.nn.Module) else checked_reward_func(func, name, "DiPOTrainer: ")
            for func, name in zip(self.reward_funcs, self.reward_func_names, strict=True)
        ]
        self._dipo_verifier_columns = self._resolve_verifier_columns(args)

        self.dipo: DiPO | None = DiPO(args.dipo_core_config()) if args.dipo_track else None
        self.last_dipo_batch: DiPOBatchRecord | None = None
        self._dipo_rewards_per_func: Tensor | None = None
        self._dipo_last_truncation_warning: int | None = None
        self._dipo_last_ds_warning: int | None = None
        self._dipo_ds_dataset: Any = None
        if args.dynamic_sampling:
            self._check_dynamic_sampling_dataset()

    # ------------------------------------------------------------------ construction helpers
    def _add_soft_overlong_reward(self, reward_funcs: Any, args: DiPOConfig, kwargs: dict[str, Any]):
        """Append TRL's DAPO soft overlong punishment; DiPO's verifier reward will skip its column."""
        funcs = (
            [] if reward_funcs is None else list(reward_funcs) if isinstance(reward_funcs, list) else [reward_funcs]
        )
        self._dipo_skip_reward_column = len(funcs)
        funcs.append(get_soft_overlong_punishment(args.max_completion_length, args.soft_overlong_cache))
        if args.reward_weights is not None and len(args.reward_weights) == len(funcs) - 1:
            args.reward_weights = [*args.reward_weights, 1.0]
        processing = kwargs.get("reward_processing_classes")
        if isinstance(processing, list) and len(processing) == len(funcs) - 1:
            kwargs = {**kwargs, "reward_processing_classes": [*processing, None]}
        return funcs, kwargs

    def _resolve_verifier_columns(self, args: DiPOConfig) -> list[int]:
        """Columns of TRL's ``rewards_per_func`` that form DiPO's verifier reward (``dipo_verifier_reward_funcs``)."""
        names = args.dipo_verifier_reward_funcs
        if names is None:
            return [i for i in range(len(self.reward_func_names)) if i != self._dipo_skip_reward_column]
        available = [n for i, n in enumerate(self.reward_func_names) if i != self._dipo_skip_reward_column]
        unknown = [n for n in names if n not in available]
        if unknown:
            raise ValueError(
                f"DiPOTrainer: dipo_verifier_reward_funcs names {unknown}, but the reward functions are {available} "
                "(TRL's reward_func_names: a function's __name__, a callable object's class name, a reward model's "
                "name; the soft overlong penalty cannot be a verifier). Use names from that list."
            )
        if len(set(available)) != len(available) and any(available.count(n) > 1 for n in names):
            raise ValueError(
                f"DiPOTrainer: several reward functions share a name in {available}; dipo_verifier_reward_funcs "
                "cannot tell them apart. Give each function its own __name__."
            )
        return [self.reward_func_names.index(n) for n in dict.fromkeys(names)]

    def _enable_fast_generation(self) -> None:
        """``fast_generation``: TRL builds its ``GenerationConfig`` with ``disable_compile=True``; allow compilation.

        The config already asks for ``cache_implementation="static"`` and bucketed prompt padding (``DiPOConfig``).
        transformers then compiles the decoding step on CUDA/XPU (its auto-compile rule); sampling settings are
        untouched."""
        generation_config = getattr(self, "generation_config", None)
        if generation_config is None:  # a vLLM / continuous-batching trainer has none (refused by DiPOConfig)
            raise RuntimeError("DiPOTrainer: fast_generation needs TRL's transformers `generate` path.")
        generation_config.disable_compile = False
        if self.args.gradient_checkpointing:
            _keep_one_input_grad_hook(self.model)

    # ------------------------------------------------------------------ TRL hooks
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._dipo_rewards_per_func = rewards_per_func  # (N_global, n_funcs), raw, gathered by TRL
        return rewards_per_func

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        if not (self.args.dynamic_sampling and self.model.training):
            return self._generate_round(inputs)[0]
        return self._dynamic_sampling(inputs)

    def _generate_round(self, inputs: list[dict[str, Any]]) -> tuple[dict[str, Any], Tensor | None]:
        """TRL's generation and scoring of ``inputs``, then DiPO's step (training batches); the raw rewards too."""
        output = super()._generate_and_score_completions(inputs)
        rewards_per_func, self._dipo_rewards_per_func = self._dipo_rewards_per_func, None
        if not self.model.training:  # DiPO acts on training batches only
            return output, rewards_per_func
        if self.args.mask_truncated_completions:
            self._check_masked_truncation(output["completion_mask"])
        if not self.args.needs_ppl:
            return output, rewards_per_func
        self._apply_dipo(output, rewards_per_func)
        return output, rewards_per_func

    def _check_masked_truncation(self, completion_mask: Tensor) -> None:
        """Log ``dipo/frac_masked_truncated`` (global share of completions TRL masked out of the loss because they
        were truncated) and warn, at most once per ``TRUNCATION_WARN_EVERY_STEPS`` steps, above the threshold."""
        masked = completion_mask.sum(dim=1) == 0
        local = torch.tensor([[float(masked.sum()), float(masked.numel())]], device=completion_mask.device)
        counts = self.accelerator.gather(local).sum(0).cpu()  # [masked, total] over all processes
        frac = float(counts[0] / counts[1].clamp(min=1))
        self._metrics["train"]["dipo/frac_masked_truncated"].append(frac)
        threshold = self.args.dipo_truncation_warn_threshold
        step = self.state.global_step
        last = self._dipo_last_truncation_warning
        if frac > threshold and (last is None or step - last >= TRUNCATION_WARN_EVERY_STEPS):
            self._dipo_last_truncation_warning = step
            logger.warning(
                "DiPOTrainer: %.0f%% of this batch's completions hit max_completion_length=%s and were masked out of "
                "the loss (mask_truncated_completions=True, DAPO overlong filtering; threshold "
                "dipo_truncation_warn_threshold=%s). Those completions teach nothing%s. Raise max_completion_length, "
                "set mask_truncated_completions=False, or shorten the expected answers (format prompt). This warning "
                "repeats at most every %d steps; see the metric dipo/frac_masked_truncated.",
                100 * frac,
                self.args.max_completion_length,
                threshold,
                " and nothing learns" if frac >= 1 else "",
                TRUNCATION_WARN_EVERY_STEPS,
            )

    # ------------------------------------------------------------------ dynamic sampling (spec §7; DAPO)
    def _check_dynamic_sampling_dataset(self) -> None:
        """Dynamic sampling draws refill prompts by index: a map-style train dataset of at least one batch."""
        dataset = self.train_dataset
        if dataset is None:
            return
        if isinstance(dataset, torch.utils.data.IterableDataset) or not hasattr(dataset, "__len__"):
            raise ValueError(
                "DiPOTrainer: dynamic_sampling=True draws the prompts of refill rounds by index from train_dataset, "
                f"but it is an iterable (streaming) dataset ({type(dataset).__name__}). Pass a map-style dataset "
                "(e.g. datasets.Dataset, not streaming=True) or set dynamic_sampling=False."
            )
        prompts = self.args.generation_batch_size // self.num_generations
        if len(dataset) < prompts:
            raise ValueError(
                f"DiPOTrainer: dynamic_sampling=True refills a batch of {prompts} prompts from train_dataset, which "
                f"holds only {len(dataset)}. Use more prompts or a smaller batch."
            )

    @profiling_decorator
    def _dynamic_sampling(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        """Generate rounds until the kept groups fill the batch (or ``max_generation_rounds``); the local batch."""
        args, group_size = self.args, self.num_generations
        keep_queue = self.dipo is not None and args.dipo_ds_queue == "kept"
        queue_state = self.dipo.queue.state_dict() if keep_queue else None
        rounds: list[dict[str, Tensor]] = []
        keeps: list[Tensor] = []
        realloc_only: list[Tensor] = []
        records: list[DiPOBatchRecord | None] = []
        while True:
            round_inputs = inputs if not rounds else self._ds_refill_inputs(len(rounds), len(inputs))
            output, rewards_per_func = self._generate_round(round_inputs)
            check_batch_keys(output)
            keep, kept_by_brr = self._ds_keep(rewards_per_func)
            rounds.append(self._ds_gather_rows(output))
            keeps.append(keep)
            realloc_only.append(kept_by_brr)
            records.append(self.last_dipo_batch if args.needs_ppl else None)
            target = keep.numel()
            if sum(int(k.sum()) for k in keeps) >= target or len(rounds) >= args.max_generation_rounds:
                break
        selection = select_groups(keeps, target)
        if selection.fillers:
            self._ds_cap_reached(target, len(selection.kept), len(rounds))
        batch = assemble(rounds, selection, group_size, target * group_size, self._tokenizer.pad_token_id)
        loss_mask = batch["completion_mask"] * batch.get("tool_mask", 1)
        local = len(inputs)
        start = self.accelerator.process_index * local
        output = {key: value[start : start + local] for key, value in batch.items()}
        output["num_items_in_batch"] = loss_mask.sum()  # TRL's global loss-token count, of the final batch
        if queue_state is not None:  # dipo_ds_queue="kept"
            queue_kept_groups(self.dipo, queue_state, [r.output for r in records], selection.kept, group_size)
        kept, by_brr = sum(int(k.sum()) for k in keeps), sum(int(k.sum()) for k in realloc_only)
        values = ds_metrics(len(rounds), kept, sum(k.numel() for k in keeps) - kept, by_brr)
        values["dipo/ds_filler_groups"] = float(len(selection.fillers))
        for key, value in values.items():
            self._metrics["train"][key].append(value)
        return output

    def _ds_keep(self, rewards_per_func: Tensor) -> tuple[Tensor, Tensor]:
        """``[B]`` groups kept by :func:`dipo.core.groups_to_keep` on this round's global verifier rewards and BRR
        decision (α > 0 only: observe-only DiPO changes nothing), and those kept only because BRR reallocated them."""
        record = self.last_dipo_batch if self.args.needs_ppl else None
        if record is not None:
            rewards, valid = record.rewards, record.valid
        else:
            verifier = self._verifier_rewards(rewards_per_func.cpu())
            rewards, valid = verifier.rewards, verifier.valid
        reallocated = None
        if self.args.dipo_enabled and record is not None and record.output is not None:
            reallocated = record.output.realloc_hard | record.output.realloc_easy
        return kept_groups(
            rewards,
            self.num_generations,
            reallocated,
            valid=valid,
            keep_reallocated=self.args.dipo_ds_keep_reallocated,
            zero_variance_tol=self.args.dipo_zero_variance_tol,
        )

    def _ds_gather_rows(self, output: dict[str, Any]) -> dict[str, Tensor]:
        """TRL's per-row tensors of every process (padded to a common width), in global row order."""
        gathered = {}
        for key, (side, value) in ROW_KEYS.items():
            tensor = output.get(key)
            if tensor is None:
                continue
            pad_value = self._tokenizer.pad_token_id if value is None else value
            if tensor.dim() > 1:
                tensor = self.accelerator.pad_across_processes(
                    tensor, dim=1, pad_index=pad_value, pad_first=side == "left"
                )
            gathered[key] = self.accelerator.gather(tensor)
        return gathered

    def _ds_refill_inputs(self, round_index: int, local_rows: int) -> list[dict[str, Any]]:
        """This process's rows of refill round ``round_index`` (fresh prompts from TRL's sampler, see
        :func:`refill_rows`: seeded by the run seed, step, micro-step and round, so a resumed run draws the same)."""
        if self._dipo_ds_dataset is None:
            dataset = self.train_dataset
            if isinstance(dataset, datasets.Dataset):  # the columns TRL's dataloader would hand over
                dataset = self._remove_unused_columns(dataset, description="dynamic sampling")
            self._dipo_ds_dataset = dataset
        group_size, processes = self.num_generations, self.accelerator.num_processes
        micro_step = self._step % self.args.gradient_accumulation_steps
        key = (int(self.args.seed), self.state.global_step, micro_step, round_index)
        rows = refill_rows(len(self._dipo_ds_dataset), local_rows * processes // group_size, group_size, key)
        start = self.accelerator.process_index * local_rows
        return [self._dipo_ds_dataset[int(i)] for i in rows[start : start + local_rows]]

    def _ds_cap_reached(self, target: int, kept: int, rounds: int) -> None:
        message = (
            f"DiPOTrainer: dynamic sampling kept {kept} of the {target} groups of the batch in "
            f"max_generation_rounds={rounds} rounds (the other groups had zero reward variance and no BRR "
            "reallocation)."
        )
        if self.args.dipo_ds_on_cap == "raise":
            raise RuntimeError(
                f"{message} dipo_ds_on_cap='raise'. Raise max_generation_rounds, use prompts of mixed difficulty, or "
                "set dipo_ds_on_cap='fill' to train on the kept groups."
            )
        step, last = self.state.global_step, self._dipo_last_ds_warning
        if last is None or step - last >= TRUNCATION_WARN_EVERY_STEPS:
            self._dipo_last_ds_warning = step
            logger.warning(
                "%s This step trains on the kept groups only: %d dropped groups fill the batch with their completions "
                "masked out of the loss (dipo_ds_on_cap='fill'). Raise max_generation_rounds to avoid it; see the "
                "metric dipo/ds_filler_groups. This warning repeats at most every %d steps.",
                message,
                target - kept,
                TRUNCATION_WARN_EVERY_STEPS,
            )

    # ------------------------------------------------------------------ DiPO post-processing
    @profiling_decorator
    def _apply_dipo(self, output: dict[str, Any], rewards_per_func: Tensor | None) -> None:
        if rewards_per_func is None:
            raise RuntimeError(
                "DiPOTrainer: no rewards were recorded for this batch (GRPOTrainer._calculate_rewards was not "
                "called). This TRL version changed its reward flow; pin trl>=1.14,<1.17."
            )
        device = output["advantages"].device
        completion_mask = output["completion_mask"]
        loss_mask = completion_mask if output.get("tool_mask") is None else completion_mask * output["tool_mask"]

        token_logps, source = self._sampling_token_logps(output)
        local_rows = torch.stack([sequence_log_ppl(token_logps.float(), loss_mask), loss_mask.sum(dim=1).float()], 1)
        # The core runs on CPU: a few thousand scalars, and no per-metric device synchronisation on GPUs.
        gathered = self.accelerator.gather(local_rows).cpu()
        log_ppl, token_counts = gathered[:, 0], gathered[:, 1]

        verifier = self._verifier_rewards(rewards_per_func.cpu())
        rewards, valid = verifier.rewards, verifier.valid
        if rewards.numel() != log_ppl.numel():
            raise RuntimeError(
                f"DiPOTrainer: {rewards.numel()} gathered rewards but {log_ppl.numel()} gathered log-PPL values; "
                "every process must generate the same number of completions."
            )
        metrics = self._metrics["train"]
        delta = torch.zeros_like(rewards)
        out = None
        if self.dipo is not None:
            # realloc_normalizer="separate" counts the α term's own normaliser in tokens for token-normalised losses
            counts = token_counts if self.loss_type in TOKEN_NORMALISED_LOSSES else None
            # the options were validated by DiPOConfig: an error here is an input error
            result = run_step(self.dipo, StepInputs(verifier, log_ppl, self.num_generations, counts), "DiPOTrainer: ")
            out = result.output
            if self.args.dipo_logs_diagnostics:
                for key, value in step_metrics(result).items():
                    metrics[key].append(value)
            if self.args.dipo_enabled:
                delta = delta + result.delta
        if self.args.ppl_bonus_coef > 0:  # the CDE-style baseline (spec §11)
            args = self.args
            cde = perplexity_bonus_delta(
                rewards,
                log_ppl,
                self.num_generations,
                args.ppl_bonus_coef,
                args.ppl_bonus_clip,
                self.scale_rewards,
                valid,
            )
            for key, value in cde.metrics().items():
                metrics[key].append(value)
            delta = delta + cde.delta

        local = output["advantages"].size(0)
        process_slice = slice(self.accelerator.process_index * local, (self.accelerator.process_index + 1) * local)
        trl_advantages = output["advantages"]
        if self.args.dipo_enabled or self.args.ppl_bonus_coef > 0:
            delta = delta.to(device=device, dtype=trl_advantages.dtype)
            output["advantages"] = trl_advantages + delta[process_slice]
            self._replace_logged_advantages(delta)

        self.last_dipo_batch = DiPOBatchRecord(
            rewards=rewards,
            log_ppl=log_ppl,
            valid=valid,
            token_counts=token_counts,
            output=out,
            trl_advantages=trl_advantages,
            advantages=output["advantages"],
            process_slice=process_slice,
            ppl_source=source,
        )

    def _sampling_token_logps(self, output: dict[str, Any]) -> tuple[Tensor, str]:
        """Per-token log-probs of the policy that sampled the batch (spec §3), and where they came from."""
        source = self.args.dipo_ppl_source
        available = {"old": output.get("old_per_token_logps"), "sampling": output.get("sampling_per_token_logps")}
        token_logps, name = choose_log_probs(source, available, lambda: self._extra_forward_logps(output))
        if token_logps is None:
            raise ValueError(
                f"DiPOConfig.dipo_ppl_source={source!r}, but TRL did not compute {source}_per_token_logps for this "
                "batch ('old' needs vLLM importance-sampling correction or num_iterations > 1 / steps_per_generation "
                "> gradient_accumulation_steps; 'sampling' needs vLLM or a rollout_func returning logprobs). Use "
                "dipo_ppl_source='auto'."
            )
        return token_logps, name

    def _extra_forward_logps(self, output: dict[str, Any]) -> Tensor:
        """One no-grad forward of the current (= sampling) policy over prompt + completion."""
        prompt_ids, completion_ids = output["prompt_ids"], output["completion_ids"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        forward_kwargs = {key: output.get(key) for key in _FORWARD_KEYS}
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            token_logps, _, _ = self._get_per_token_logps_and_entropies(
                self.model,
                input_ids,
                attention_mask,
                completion_ids.size(1),
                batch_size=self.args.per_device_train_batch_size,
                **forward_kwargs,
            )
        return token_logps

    def _verifier_rewards(self, rewards_per_func: Tensor) -> VerifierRewards:
        """DiPO's verifier reward, the valid rows (some verifier function scored the row), the overlong share.

        ``dipo_verifier_reward_funcs=None``: the weighted (``reward_weights``) sum of every reward function but the
        soft overlong penalty (a separate column, left out); otherwise the unweighted sum of the named functions.
        Rewards DiPO cannot use raise a ``ValueError`` that names the reward function and the option to set.
        """
        columns = self._dipo_verifier_columns
        per_func = rewards_per_func[:, columns]
        if self.args.dipo_verifier_reward_funcs is None:
            weights = self.reward_weights.to(per_func.device)[columns]
        else:
            weights = torch.ones(len(columns), dtype=per_func.dtype, device=per_func.device)
        skip = self._dipo_skip_reward_column
        verifier = compose_verifier_rewards(per_func, weights, None if skip is None else rewards_per_func[:, skip])
        if self.dipo is not None:
            self._check_verifier_rewards(per_func, weights, verifier.rewards, verifier.valid)
        return verifier

    def _verifier_description(self) -> str:
        names = [self.reward_func_names[i] for i in self._dipo_verifier_columns]
        if self.args.dipo_verifier_reward_funcs is None:
            return f"the weighted sum of all reward functions {names} (dipo_verifier_reward_funcs=None)"
        return f"the sum of dipo_verifier_reward_funcs={names}"

    def _check_verifier_rewards(self, per_func: Tensor, weights: Tensor, rewards: Tensor, valid: Tensor) -> None:
        """Name the reward function behind a verifier reward DiPO cannot use (infinite, or not 0/1 in binary mode)."""
        names = [self.reward_func_names[i] for i in self._dipo_verifier_columns]
        infinite = infinite_verifier_value(per_func, names)
        if infinite is not None:
            raise ValueError(
                f"DiPOTrainer: {infinite}; DiPO's verifier reward ({self._verifier_description()}) must be finite. "
                "Return None for completions the function cannot score."
            )
        binary = self.args.dipo_reward_mode == "binary"
        problem = non_binary_verifier_reward(per_func, weights, rewards, valid, names) if binary else None
        if problem is None:
            return
        other = [n for i, n in enumerate(self.reward_func_names) if i not in self._dipo_verifier_columns]
        hint = (
            "set dipo_verifier_reward_funcs to the reward function(s) that decide correctness, e.g. "
            f"dipo_verifier_reward_funcs=[{names[0]!r}] (the other functions still count in TRL's advantages)"
            if len(names) > 1
            else "make the reward function return 0/1"
        )
        raise ValueError(
            f"DiPOTrainer: dipo_reward_mode='binary' needs DiPO's verifier reward in {{0, 1}}, but {problem}. DiPO's "
            f"verifier reward is {self._verifier_description()}"
            + (f"; not included: {other}" if other else "")
            + f". To fix: {hint}, or use dipo_reward_mode='graded' with dipo_correct_threshold for graded rewards."
        )

    def _replace_logged_advantages(self, delta: Tensor) -> None:
        """TRL logged its own global advantages in ``self._logs['advantages']``; replace them by the final ones."""
        logged = self._logs["advantages"]
        count = min(len(logged), delta.numel())
        tail = [logged.pop() for _ in range(count)][::-1]
        new = torch.tensor(tail, dtype=delta.dtype) + delta[delta.numel() - count :].cpu()
        logged.extend(new.tolist())

    # ------------------------------------------------------------------ checkpointing of the PPL queue (spec §4)
    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """``Trainer.train``, resuming only from a complete checkpoint.

        ``resume_from_checkpoint=True`` takes the newest *complete* ``checkpoint-N`` of ``output_dir`` (one warning
        names each newer, incomplete one it skips); a folder given by name must be complete. Otherwise a
        ``ValueError`` says why, before anything is loaded (see :mod:`dipo.integrations.trl.checkpoints`).
        """
        needs_state = self._needs_dipo_state()
        if resume_from_checkpoint is True:
            output_dir = self.args.output_dir
            found, skipped = newest_complete_checkpoint(output_dir, needs_state)
            if found is None:
                fresh = "start a new run (resume_from_checkpoint=None)"
                raise ValueError(f"DiPOTrainer: {no_complete_checkpoint_message(output_dir, skipped, fresh)}")
            for folder, problem in skipped:
                warnings.warn(
                    f"DiPOTrainer: skipping incomplete checkpoint {folder}: it {problem}.", UserWarning, stacklevel=2
                )
            resume_from_checkpoint = found
        elif resume_from_checkpoint not in (None, False):
            folder = os.fspath(resume_from_checkpoint)
            problem = checkpoint_problem(folder, needs_state)
            if problem is not None:
                raise ValueError(
                    f"DiPOTrainer: cannot resume from {folder}: it {problem}. Give a complete checkpoint, e.g. an "
                    "earlier one, or resume_from_checkpoint=True for the newest complete checkpoint of output_dir."
                )
        return super().train(resume_from_checkpoint, *args, **kwargs)

    def _run_epoch(self, *args: Any, **kwargs: Any) -> Any:
        """Train nothing when resumed at (or past) ``max_steps``: transformers 5.10 would train one more step (its
        loop checks ``max_steps`` only after a step), so a job stopped between its last checkpoint and its final save
        would not end as the uninterrupted run."""
        if 0 < self.state.max_steps <= self.state.global_step:
            self.control.should_training_stop = True
            return None
        return super()._run_epoch(*args, **kwargs)

    def _needs_dipo_state(self) -> bool:
        """A checkpoint must hold ``dipo_state.pt`` to be complete: DiPO runs and empty queues are not allowed."""
        return self.dipo is not None and not self.args.dipo_resume_empty_queue

    def _save_checkpoint(self, model, trial):
        """Save ``checkpoint-N`` so that an interruption at any moment leaves it incomplete, never half-complete.

        Before the parent's save (model, optimizer, scheduler, RNG, ``trainer_state.json`` last, then rotation):
        a stale ``trainer_state.json`` / ``dipo_state.pt`` of an earlier run in the same folder is removed, and the
        PPL queue is written (atomically). The folder is complete only once ``trainer_state.json`` exists.
        """
        folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        if self.args.should_save:
            stale = [TRAINER_STATE_NAME] + ([DIPO_STATE_NAME] if self.dipo is None else [])
            for name in stale:
                if os.path.isfile(os.path.join(folder, name)):
                    os.remove(os.path.join(folder, name))
            if self.dipo is not None:
                self._save_dipo_state(folder)
        super()._save_checkpoint(model, trial)

    def _save_dipo_state(self, folder: str) -> str:
        """Spec §4: write the PPL queue to ``<folder>/dipo_state.pt`` in the kit's format (atomically: temporary file
        + ``os.replace``)."""
        payload = state_payload(self.dipo.state_dict(), self.args.dipo_ppl_source, self.state.global_step)
        return save_state_file(payload, folder)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = state_path(checkpoint)
        if self.dipo is None:
            if os.path.exists(path):
                warnings.warn(
                    f"DiPOTrainer: {checkpoint} holds a DiPO PPL queue ({DIPO_STATE_NAME}), but DiPO does not run in "
                    f"this configuration (preset={self.args.preset!r}, dipo_alpha={self.args.dipo_alpha}, "
                    f"dipo_log_diagnostics={self.args.dipo_log_diagnostics}); the saved queue is ignored. Set "
                    "dipo_alpha > 0 or dipo_log_diagnostics=True to keep using it.",
                    UserWarning,
                    stacklevel=2,
                )
            return
        # names the file and says what to do if it is unreadable or its options give the queue another meaning
        if restore_dipo_state(self.dipo, checkpoint, option_name=trl_option_name) is None:
            if not self.args.dipo_resume_empty_queue:  # train() refuses such a checkpoint first
                raise ValueError(f"DiPOTrainer: cannot resume from {checkpoint}: it has no {DIPO_STATE_NAME}.")
            warnings.warn(
                f"DiPOTrainer: resuming from {checkpoint}, which has no {DIPO_STATE_NAME}; the PPL queue starts empty "
                "(dipo_resume_empty_queue=True; the threshold uses only new batches until the queue refills).",
                UserWarning,
                stacklevel=2,
            )

    # ------------------------------------------------------------------ convenience
    def dipo_log_history(self, key: str) -> list[float]:
        """Values of metric ``dipo/<key>`` (or a full key) per logging step from ``state.log_history``."""
        full = key if key.startswith("dipo/") else f"dipo/{key}"
        return [
            math.nan if entry[full] is None else float(entry[full])
            for entry in self.state.log_history
            if full in entry
        ]
