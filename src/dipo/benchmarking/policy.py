"""The timing policy of ``scripts/gpu_check.py``: a SmolLM2-135M-shaped decoder (real weights or random init) and
one :class:`PolicyBench` holding every timing trainer over it."""

from __future__ import annotations

import gc
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, CompileConfig, PrinterCallback

from dipo import tiny_model
from dipo.benchmarking.timing import StepTimer, TimedDiPOTrainer
from dipo.integrations.trl import DiPOConfig
from dipo.reports.gpu_report import log
from dipo.tasks.assets import smollm2_model_dir
from dipo.tiny_model import build_decoder


@dataclass(frozen=True)
class PolicyShape:
    """Decoder shape of the timing policy (default: SmolLM2-135M, Llama architecture)."""

    hidden_size: int = 576
    intermediate_size: int = 1536
    num_hidden_layers: int = 30
    num_attention_heads: int = 9
    num_key_value_heads: int = 3
    vocab_size: int = 49152
    rope_theta: float = 100000.0


@dataclass(frozen=True)
class BenchSizes:
    """Everything that sets the cost of the timing parts (fast rollouts, overhead)."""

    policy: PolicyShape = field(default_factory=PolicyShape)
    prompt_len: int = 64
    completion_len: int = 256
    prompts_per_step: int = 16
    num_generations: int = 8
    bucket: int = 64
    fastgen_steps: int = 4  # per path; the first (warm-up, compilation) is reported separately
    overhead_rounds: int = 3  # per method, interleaved, after one warm-up round each
    overhead_steps_per_round: int = 3  # the first step of every round is dropped


def build_word_tokenizer(vocab_size: int):
    """Word-level tokenizer with ``vocab_size`` entries (``<pad>``, ``<eos>``, ``w2``...; unknown words: ``<pad>``),
    built locally (:func:`dipo.tiny_model.build_word_tokenizer`)."""
    return tiny_model.build_word_tokenizer(["<pad>", "<eos>", *(f"w{i}" for i in range(2, vocab_size))], "<pad>")


def build_policy(shape: PolicyShape, device: torch.device, policy_path: str | None) -> tuple[Any, Any, str]:
    """(model, tokenizer, description). Real weights from ``policy_path`` (a transformers folder) if given, else the
    SmolLM2 asset if installed (SmolLM2 shape only), else a random-init Llama of ``shape``."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if policy_path is None and shape == PolicyShape():
        try:
            policy_path = str(smollm2_model_dir())
        except Exception as err:  # asset not installed (the GPU image): random init
            log(f"no SmolLM2 weights ({type(err).__name__}); random init of the same shape")
    if policy_path is not None:
        model = AutoModelForCausalLM.from_pretrained(policy_path, dtype=dtype).to(device)
        tokenizer = AutoTokenizer.from_pretrained(policy_path)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        return model, tokenizer, f"real weights: {policy_path}"
    tokenizer = build_word_tokenizer(shape.vocab_size)
    model = build_decoder(
        "llama",
        vocab_size=shape.vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_layers=shape.num_hidden_layers,
        num_heads=shape.num_attention_heads,
        num_kv_heads=shape.num_key_value_heads,
        max_positions=2048,
        pad_token_id=0,
        eos_token_id=1,
        seed=0,
        isolate_rng=False,
        rope_theta=shape.rope_theta,
    ).to(device=device, dtype=dtype)
    return model, tokenizer, "random init"


class PolicyBench:
    """One policy object and all the timing trainers over it, built before any generation.

    Every ``GRPOTrainer`` construction wraps ``model.forward`` (TRL's fused LM head), and ``torch.compile`` guards on
    it: building the trainers first means the decoding step is compiled once, at the first fast generation. Each
    trainer then trains in short calls of ``train()`` (same model, optimizer and queue kept between calls).
    """

    def __init__(
        self,
        sizes: BenchSizes,
        device: torch.device,
        work: Path,
        policy_path: str | None,
        keys: list[tuple[str, bool]],
        eager_compile: bool = False,
    ) -> None:
        self.sizes, self.device, self.work = sizes, device, work
        self.model, self.tokenizer, self.weights = build_policy(sizes.policy, device, policy_path)
        n = sizes.prompts_per_step * max(sizes.fastgen_steps, sizes.overhead_steps_per_round)
        self.dataset = Dataset.from_dict({"prompt": timing_prompts(self.tokenizer, n, sizes.prompt_len)})
        self.trainers: dict[tuple[str, bool], Any] = {}
        self.timers: dict[tuple[str, bool], Any] = {}
        for preset, fast in keys:
            timer = StepTimer(device)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trainer = TimedDiPOTrainer(
                    model=self.model,
                    reward_funcs=[coin_reward],
                    args=self.config(preset, fast),
                    train_dataset=self.dataset,
                    processing_class=self.tokenizer,
                    callbacks=[timer],
                )
            trainer.remove_callback(PrinterCallback)
            if fast and eager_compile:  # CPU test aid: transformers compiles on CUDA/XPU only
                config = CompileConfig(backend="eager", dynamic=False)
                config._compile_all_devices = True
                trainer.generation_config.compile_config = config
                trainer.generation_kwargs = {**trainer.generation_kwargs, "compile_config": config}
            self.trainers[(preset, fast)], self.timers[(preset, fast)] = trainer, timer

    def config(self, preset: str, fast: bool, **overrides: Any) -> DiPOConfig:
        s = self.sizes
        settings: dict[str, Any] = dict(
            output_dir=str(self.work / f"{preset}-{'fast' if fast else 'default'}"),
            preset=preset,
            fast_generation=fast,
            fast_generation_bucket=s.bucket,
            max_steps=1,  # set per call of run()
            per_device_train_batch_size=s.prompts_per_step * s.num_generations,
            gradient_accumulation_steps=1,
            num_generations=s.num_generations,
            max_completion_length=s.completion_len,
            temperature=1.0,
            learning_rate=1e-6,
            lr_scheduler_type="constant",
            mask_truncated_completions=False,  # random-init completions run to full length: keep their loss
            logging_steps=1,
            save_strategy="no",
            report_to="none",
            use_cpu=self.device.type == "cpu",
            bf16=False,  # the policy itself is bf16 on CUDA
            seed=0,
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        settings.update(overrides)
        return DiPOConfig(**settings)

    def run(self, preset: str, fast: bool, steps: int) -> dict[str, Any]:
        """Train ``steps`` more steps with the (preset, fast) trainer; per-step times, rollouts and DiPO work."""
        trainer, timer = self.trainers[(preset, fast)], self.timers[(preset, fast)]
        n_steps, n_rollouts, n_work = len(timer.wall), len(trainer.rollouts), len(trainer.dipo_work)
        trainer.args.max_steps = steps
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.train()
        graphs = timer.graphs[n_steps:]
        rollouts = trainer.rollouts[n_rollouts:]
        self.last_trainer = trainer
        return {
            "step_s": timer.wall[n_steps:],
            "new_compiled_graphs_after_first_step": graphs[-1] - graphs[0] if graphs else None,
            "rollout_s": [t for t, _ in rollouts],
            "rollout_tokens": [n for _, n in rollouts],
            "dipo_work_s": trainer.dipo_work[n_work:],
            "generation_config": trainer.generation_config.to_dict(),
            "pad_to_multiple_of": trainer.args.pad_to_multiple_of,
        }

    def release(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def timing_prompts(tokenizer: Any, n: int, length: int) -> list[str]:
    """``n`` prompts of about ``length`` tokens (random token ids, fixed seed)."""
    gen = torch.Generator().manual_seed(1234)
    high = min(len(tokenizer), 32000)
    return [tokenizer.decode(torch.randint(2, high, (length,), generator=gen).tolist()) for _ in range(n)]


def coin_reward(completion_ids: list[list[int]], **kwargs: Any) -> list[float]:
    """Deterministic pseudo-random 0/1 reward of the completion tokens (timing runs: any binary reward will do)."""
    return [float(zlib.crc32(str(ids[:8]).encode()) % 2) for ids in completion_ids]
