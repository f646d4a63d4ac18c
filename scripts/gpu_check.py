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
3. **learning** — the demo task (``dipo.tasks.arithmetic``, reversed-digit addition) with a larger from-scratch
   model (``dipo.demo``'s model and tokenizer, supervised warm start on the device), then GRPO / DAPO / DiPO for
   several seeds (seed-major order, so a time budget cuts whole seeds); held-out greedy accuracy and mean@k.

    python scripts/gpu_check.py --out results/gpu            # size "full" on CUDA, "tiny" on CPU
    scripts/gpu_check.sh results/gpu                         # same, after installing wheels from .whl/ if present
    python scripts/gpu_check.py --out /tmp/g --device cpu --size tiny --parts fastgen
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
import zlib
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

for _var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.setdefault(_var, "1")  # the GPU machine has no network; never try the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without installing

import torch  # noqa: E402

PARTS = ("fastgen", "overhead", "learning")
TARGETS = {"overhead_ratio_max": 1.02, "rollout_speedup_min": 5.0, "step_speedup_min": 3.0}


# ------------------------------------------------------------------------------------------------ sizes
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
class Sizes:
    """Everything that sets the cost of a run. ``full`` is sized for <= 8 minutes on one H100/H200."""

    policy: PolicyShape = field(default_factory=PolicyShape)
    prompt_len: int = 64
    completion_len: int = 256
    prompts_per_step: int = 16
    num_generations: int = 8
    bucket: int = 64
    fastgen_steps: int = 4  # per path; the first (warm-up, compilation) is reported separately
    overhead_rounds: int = 3  # per method, interleaved, after one warm-up round each
    overhead_steps_per_round: int = 3  # the first step of every round is dropped
    # learning: the demo's recipe (dipo.demo) with an 8x larger model (1.05 M parameters) and twice the RL steps. This
    # warm start, trained on CPU, had held-out mean@8 0.97 / 0.95 / 0.07 / 0.01 / 0.00 on levels 1-5: easy, mixed
    # and hard groups in one batch (the regime DiPO acts on)
    model_hidden: int = 128
    model_intermediate: int = 512
    model_layers: int = 4
    model_heads: int = 4
    sft_steps: int = 1800
    sft_batch: int = 64
    sft_lr: float = 3e-3
    rl_steps: int = 200
    rl_prompts_per_step: int = 32
    rl_generations: int = 8
    rl_lr: float = 3e-4
    rl_completion_len: int = 8
    seeds: tuple[int, ...] = (0, 1, 2)
    eval_per_level: int = 100
    k: int = 8


SIZES = {
    "full": Sizes(),
    "tiny": Sizes(
        policy=PolicyShape(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            vocab_size=512,
        ),
        prompt_len=8,
        completion_len=8,
        prompts_per_step=4,
        num_generations=4,
        bucket=16,
        fastgen_steps=2,
        overhead_rounds=1,
        overhead_steps_per_round=2,
        model_hidden=32,
        model_intermediate=64,
        model_layers=2,
        model_heads=2,
        sft_steps=60,
        sft_batch=32,
        sft_lr=3e-3,
        rl_steps=2,
        rl_prompts_per_step=4,
        rl_generations=4,
        seeds=(0,),
        eval_per_level=4,
        k=2,
    ),
}


# ------------------------------------------------------------------------------------------------ results file
class Results:
    """The JSON record, rewritten after every update so that a killed run keeps what it measured."""

    def __init__(self, out: Path, meta: dict[str, Any]) -> None:
        self.out = out
        self.data: dict[str, Any] = {"meta": meta, "status": "running"}
        self.save()

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.save()

    def save(self) -> None:
        tmp = self.out / "gpu_check.json.tmp"
        tmp.write_text(json.dumps(self.data, indent=1, default=_json_default))
        os.replace(tmp, self.out / "gpu_check.json")


def _json_default(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return str(value)


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


# ------------------------------------------------------------------------------------------------ timing policy
def build_word_tokenizer(vocab_size: int):
    """Word-level tokenizer with ``vocab_size`` entries (``<pad>``, ``<eos>``, ``w2``...), built locally."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, **{f"w{i}": i for i in range(2, vocab_size)}}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>", padding_side="left")


def build_policy(sizes: Sizes, device: torch.device, policy_path: str | None) -> tuple[Any, Any, str]:
    """(model, tokenizer, description). Real weights from ``policy_path`` (a transformers folder) if given, else the
    SmolLM2 asset if installed (full size only), else a random-init Llama of ``sizes.policy``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if policy_path is None and sizes.policy == PolicyShape():
        try:
            from dipo.tasks.assets import smollm2_model_dir

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
    shape = sizes.policy
    tokenizer = build_word_tokenizer(shape.vocab_size)
    config = LlamaConfig(
        vocab_size=shape.vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        max_position_embeddings=2048,
        rope_theta=shape.rope_theta,
        tie_word_embeddings=True,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to(device=device, dtype=dtype)
    model.generation_config.pad_token_id, model.generation_config.eos_token_id = 0, 1
    model.generation_config.bos_token_id = None
    return model, tokenizer, "random init"


def timing_prompts(tokenizer: Any, n: int, length: int) -> list[str]:
    """``n`` prompts of about ``length`` tokens (random token ids, fixed seed)."""
    gen = torch.Generator().manual_seed(1234)
    high = min(len(tokenizer), 32000)
    return [tokenizer.decode(torch.randint(2, high, (length,), generator=gen).tolist()) for _ in range(n)]


def coin_reward(completion_ids: list[list[int]], **kwargs: Any) -> list[float]:
    """Deterministic pseudo-random 0/1 reward of the completion tokens (timing runs: any binary reward will do)."""
    return [float(zlib.crc32(str(ids[:8]).encode()) % 2) for ids in completion_ids]


def make_probe_trainer_class():
    """``DiPOTrainer`` that times its rollouts (``_generate_single_turn``) and DiPO's work (``_apply_dipo``)."""
    from dipo.integrations.trl import DiPOTrainer

    class ProbeTrainer(DiPOTrainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.rollouts: list[tuple[float, int]] = []  # (seconds, generated tokens)
            self.dipo_work: list[float] = []

        def _generate_single_turn(self, prompt_ids, *args: Any, **kwargs: Any):
            sync(self.accelerator.device)
            start = time.perf_counter()
            completion_ids, logprobs = super()._generate_single_turn(prompt_ids, *args, **kwargs)
            sync(self.accelerator.device)
            self.rollouts.append((time.perf_counter() - start, sum(len(c) for c in completion_ids)))
            return completion_ids, logprobs

        def _apply_dipo(self, output, rewards_per_func):
            sync(self.accelerator.device)
            start = time.perf_counter()
            super()._apply_dipo(output, rewards_per_func)
            sync(self.accelerator.device)
            self.dipo_work.append(time.perf_counter() - start)

    return ProbeTrainer


def make_step_timer(device: torch.device):
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.graphs: list[int] = []  # torch.compile graphs built so far, after each step
            self._start = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            sync(device)
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            sync(device)
            self.times.append(time.perf_counter() - self._start)
            self.graphs.append(dynamo_graphs())

    return StepTimer()


class PolicyBench:
    """One policy object and all the timing trainers over it, built before any generation.

    Every ``GRPOTrainer`` construction wraps ``model.forward`` (TRL's fused LM head), and ``torch.compile`` guards on
    it: building the trainers first means the decoding step is compiled once, at the first fast generation. Each
    trainer then trains in short calls of ``train()`` (same model, optimizer and queue kept between calls).
    """

    def __init__(
        self,
        sizes: Sizes,
        device: torch.device,
        work: Path,
        policy_path: str | None,
        keys: list[tuple[str, bool]],
        eager_compile: bool = False,
    ) -> None:
        from datasets import Dataset
        from transformers import PrinterCallback

        self.sizes, self.device, self.work = sizes, device, work
        self.model, self.tokenizer, self.weights = build_policy(sizes, device, policy_path)
        n = sizes.prompts_per_step * max(sizes.fastgen_steps, sizes.overhead_steps_per_round)
        self.dataset = Dataset.from_dict({"prompt": timing_prompts(self.tokenizer, n, sizes.prompt_len)})
        trainer_class = make_probe_trainer_class()
        self.trainers: dict[tuple[str, bool], Any] = {}
        self.timers: dict[tuple[str, bool], Any] = {}
        for preset, fast in keys:
            timer = make_step_timer(device)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                trainer = trainer_class(
                    model=self.model,
                    reward_funcs=[coin_reward],
                    args=self.config(preset, fast),
                    train_dataset=self.dataset,
                    processing_class=self.tokenizer,
                    callbacks=[timer],
                )
            trainer.remove_callback(PrinterCallback)
            if fast and eager_compile:  # CPU test aid: transformers compiles on CUDA/XPU only
                from transformers import CompileConfig

                config = CompileConfig(backend="eager", dynamic=False)
                config._compile_all_devices = True
                trainer.generation_config.compile_config = config
                trainer.generation_kwargs = {**trainer.generation_kwargs, "compile_config": config}
            self.trainers[(preset, fast)], self.timers[(preset, fast)] = trainer, timer

    def config(self, preset: str, fast: bool, **overrides: Any):
        from dipo.integrations.trl import DiPOConfig

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
        n_steps, n_rollouts, n_work = len(timer.times), len(trainer.rollouts), len(trainer.dipo_work)
        trainer.args.max_steps = steps
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.train()
        graphs = timer.graphs[n_steps:]
        rollouts = trainer.rollouts[n_rollouts:]
        self.last_trainer = trainer
        return {
            "step_s": timer.times[n_steps:],
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


def dynamo_graphs() -> int:
    try:
        from torch._dynamo.utils import counters

        return int(counters["stats"]["unique_graphs"])
    except Exception:
        return -1


# ------------------------------------------------------------------------------------------------ 1. fast rollouts
@contextlib.contextmanager
def generation_context(trainer: Any):
    """As TRL generates: training mode (the compiled step is specialised on it), no grad, no gradient
    checkpointing (which would switch the KV cache off)."""
    from trl.models.utils import disable_gradient_checkpointing

    trainer.model.train()
    with torch.no_grad(), disable_gradient_checkpointing(trainer.model, trainer.args.gradient_checkpointing_kwargs):
        yield


def logprob_check(trainer: Any, generation_config: Any, prompts: list[str], seed: int) -> dict[str, float]:
    """Sample with ``generation_config``; compare the sampled tokens' log-probs from the sampler's own logits with
    TRL's loss-side log-probs (full reference forward, temperature applied) over TRL's completion mask."""
    tok, model = trainer.processing_class, trainer.model
    temperature = float(trainer.temperature)
    rows = [p for p in prompts for _ in range(trainer.num_generations)]
    batch = tok(rows, padding=True, pad_to_multiple_of=trainer.args.pad_to_multiple_of, return_tensors="pt")
    batch = {k: v.to(trainer.accelerator.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
    config = copy.deepcopy(generation_config)
    config.output_logits, config.return_dict_in_generate = True, True
    torch.manual_seed(seed)
    with generation_context(trainer):
        out = model.generate(**batch, generation_config=config)
    prompt_len = batch["input_ids"].size(1)
    completion = out.sequences[:, prompt_len:]
    sampler = torch.stack(
        [
            torch.log_softmax(logits.float() / temperature, dim=-1).gather(-1, completion[:, t : t + 1]).squeeze(-1)
            for t, logits in enumerate(out.logits)
        ],
        dim=1,
    )
    is_eos = torch.isin(completion, torch.tensor(trainer.eos_token_ids, device=completion.device))
    mask = (is_eos.int().cumsum(dim=1) - is_eos.int()) == 0  # TRL: everything up to and including the first EOS
    with generation_context(trainer):
        reference, _, _ = trainer._get_per_token_logps_and_entropies(
            model,
            out.sequences,
            torch.cat([batch["attention_mask"], mask.long()], dim=1),
            completion.size(1),
            batch_size=max(1, len(rows) // 8),
        )
    diff = (sampler - reference.float()).abs()[mask]
    return {
        "tokens": int(mask.sum()),
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "mean_logprob": float(reference.float()[mask].mean()),
    }


def greedy_check(trainer: Any, configs: dict[str, Any], prompts: list[str]) -> dict[str, float]:
    """Greedy completions of the default and fast configs on the same weights: identical rows, agreeing prefix."""
    tok, model = trainer.processing_class, trainer.model
    rows = [p for p in prompts for _ in range(trainer.num_generations)]
    batch = tok(rows, padding=True, pad_to_multiple_of=trainer.args.pad_to_multiple_of, return_tensors="pt")
    batch = {k: v.to(trainer.accelerator.device) for k, v in batch.items() if k in ("input_ids", "attention_mask")}
    outs = {}
    for name, config in configs.items():
        config = copy.deepcopy(config)
        config.do_sample = False
        with generation_context(trainer):
            outs[name] = model.generate(**batch, generation_config=config)[:, batch["input_ids"].size(1) :]
    a, b = outs["default"], outs["fast"]
    width = min(a.size(1), b.size(1))
    same = (a[:, :width] == b[:, :width]).int()
    prefix = same.cumprod(dim=1).sum(dim=1).float() / width
    return {"identical_rows": float((prefix == 1).float().mean()), "mean_agreeing_prefix": float(prefix.mean())}


def part_fastgen(bench: PolicyBench, results: Results) -> None:
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
def heldout_eval(model: Any, tokenizer: Any, items: list[Any], k: int, max_new: int, seed: int) -> dict[str, Any]:
    """Greedy accuracy and mean@k (temperature 1) on ``items``, on the model's device (``dipo.demo.evaluate``)."""
    from dipo.demo.evaluate import evaluate

    return evaluate(model, tokenizer, items, k=k, max_new_tokens=max_new, seed=seed).as_dict()


def warm_start(sizes: Sizes, task: Any, device: torch.device, path: Path) -> dict[str, Any]:
    """Supervised warm start on ``device`` (``dipo.demo.warmstart``'s recipe and batches), saved to ``path``."""
    from dipo.demo.model import ModelSpec, build_model, num_parameters
    from dipo.demo.tokenizer import build_tokenizer
    from dipo.demo.warmstart import SFTConfig, supervised_finetune

    spec = ModelSpec(
        hidden_size=sizes.model_hidden,
        intermediate_size=sizes.model_intermediate,
        num_hidden_layers=sizes.model_layers,
        num_attention_heads=sizes.model_heads,
    )
    sft = SFTConfig(steps=sizes.sft_steps, batch_size=sizes.sft_batch, learning_rate=sizes.sft_lr)
    tokenizer = build_tokenizer()
    model = build_model(spec, tokenizer, seed=sft.seed).to(device)
    start = time.perf_counter()
    losses = supervised_finetune(model, tokenizer, task, sft)
    final_loss = sum(losses[-20:]) / len(losses[-20:])
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return {
        "model": spec.as_dict(),
        "num_parameters": num_parameters(model),
        "sft": asdict(sft),
        "sft_seconds": time.perf_counter() - start,
        "final_loss": final_loss,
    }


def rl_run(sizes: Sizes, task: Any, method: Any, seed: int, warm: Path, device: torch.device, work: Path):
    """One RL run from the warm start through ``DiPOTrainer``; held-out metrics after training."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast, PrinterCallback

    from dipo.integrations.trl import DiPOConfig
    from dipo.tasks.arithmetic import arithmetic_reward, to_records

    start = time.perf_counter()
    torch.manual_seed(seed)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(warm)
    model = AutoModelForCausalLM.from_pretrained(warm, dtype=torch.float32).to(device)
    train = Dataset.from_list(
        to_records(task.sample(sizes.rl_steps * sizes.rl_prompts_per_step, seed=10_000 + seed, split="train"))
    )
    settings: dict[str, Any] = dict(
        output_dir=str(work / f"{method.name}-s{seed}"),
        preset=method.preset,
        max_steps=sizes.rl_steps,
        per_device_train_batch_size=sizes.rl_prompts_per_step * sizes.rl_generations,
        gradient_accumulation_steps=1,
        num_generations=sizes.rl_generations,
        max_completion_length=sizes.rl_completion_len,
        temperature=1.0,
        learning_rate=sizes.rl_lr,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=min(10, sizes.rl_steps // 10),
        weight_decay=0.0,
        max_grad_norm=1.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=device.type == "cpu",
        bf16=False,
        seed=seed,
        data_seed=seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    settings.update(method.overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer = make_probe_trainer_class()(
            model=model,
            reward_funcs=[arithmetic_reward],
            args=DiPOConfig(**settings),
            train_dataset=train,
            processing_class=tokenizer,
        )
        trainer.remove_callback(PrinterCallback)
        trainer.train()
    history = [e for e in trainer.state.log_history if "reward" in e]
    heldout = task.heldout_set(sizes.eval_per_level, seed=2)
    final = heldout_eval(model, tokenizer, heldout, sizes.k, sizes.rl_completion_len, seed=12_345 + seed)
    applied = [e.get("dipo/applied") for e in history if e.get("dipo/applied") is not None]
    return {
        "method": method.name,
        "seed": seed,
        "final": final,
        "train_reward": [float(e["reward"]) for e in history],
        "dipo_applied_frac": (sum(applied) / len(applied)) if applied else None,
        "seconds": time.perf_counter() - start,
    }


def part_learning(
    sizes: Sizes, device: torch.device, work: Path, results: Results, deadline: float, workers: int
) -> None:
    from dipo.demo.methods import resolve_methods
    from dipo.tasks.arithmetic import ArithmeticTask

    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    task = ArithmeticTask(ops=("+",))  # the demo's task
    report: dict[str, Any] = {"task": asdict(task), "sizes": {}, "runs": [], "skipped": []}
    report["sizes"] = {
        k: v for k, v in asdict(sizes).items() if k.startswith(("model_", "sft_", "rl_")) or k in ("seeds", "k")
    }
    log(f"learning: warm start ({sizes.sft_steps} SFT steps)")
    warm = work / "warmstart"
    report["warmstart"] = warm_start(sizes, task, device, warm)
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    heldout = task.heldout_set(sizes.eval_per_level, seed=2)
    model = AutoModelForCausalLM.from_pretrained(warm).to(device)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(warm)
    report["warmstart"]["heldout"] = heldout_eval(model, tokenizer, heldout, sizes.k, sizes.rl_completion_len, 12_345)
    del model
    log(f"learning: warm start {report['warmstart']['sft_seconds']:.1f} s, {report['warmstart']['heldout']}")
    results.set("learning", report)
    methods = resolve_methods(["grpo", "dapo", "dipo"])
    jobs = [(seed, method) for seed in sizes.seeds for method in methods]  # seed-major: a cut loses whole seeds
    payloads = [
        dict(sizes=sizes, task=task, method=m, seed=seed, warm=warm, device=str(device), work=work, deadline=deadline)
        for seed, m in jobs
    ]

    def collect(run: dict[str, Any]) -> None:
        if run.get("skipped"):
            report["skipped"].append(f"{run['method']}-s{run['seed']}")
            log(f"learning: {run['method']} seed {run['seed']} skipped (time budget)")
        else:
            report["runs"].append(run)
            log(
                f"learning: {run['method']} seed {run['seed']}: mean@{sizes.k} {run['final']['mean_at_k']:.3f}, "
                f"greedy {run['final']['greedy']:.3f} ({run['seconds']:.1f} s)"
            )
        order = {(seed, m.name): i for i, (seed, m) in enumerate(jobs)}
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
    """One RL run (in-process or in a worker process); skipped once the wall-clock ``deadline`` has passed."""
    device = torch.device(payload["device"])
    if time.time() > payload["deadline"]:
        return {"method": payload["method"].name, "seed": payload["seed"], "skipped": True}
    quiet_transformers()
    if device.type == "cpu":
        torch.set_num_threads(1)
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
    return rl_run(
        payload["sizes"], payload["task"], payload["method"], payload["seed"], payload["warm"], device, payload["work"]
    )


def quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore")


def learning_summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(r["method"] for r in runs):
        values = [r["final"]["mean_at_k"] for r in runs if r["method"] == name]
        greedy = [r["final"]["greedy"] for r in runs if r["method"] == name]
        out[name] = {
            "seeds": len(values),
            "mean_at_k": statistics.fmean(values),
            "mean_at_k_std": statistics.stdev(values) if len(values) > 1 else math.nan,
            "mean_at_k_per_seed": values,
            "greedy": statistics.fmean(greedy),
        }
    return out


# ------------------------------------------------------------------------------------------------ report
def fmt(value: Any, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, spec)


def render_markdown(data: dict[str, Any]) -> str:
    """The result tables of ``docs/results/gpu.md`` filled from a ``gpu_check.json`` record."""
    meta = data.get("meta", {})
    lines = [
        f"Measured {meta.get('date', '?')} on **{meta.get('device_name', '?')}** (`{meta.get('device', '?')}`), "
        f"size `{meta.get('size', '?')}`; torch {meta.get('torch', '?')}, transformers "
        f"{meta.get('transformers', '?')}, trl {meta.get('trl', '?')}, Python {meta.get('python', '?')}.",
        "",
        f"Command: `{meta.get('command', '?')}` (status: {data.get('status', '?')}, "
        f"{fmt(data.get('elapsed_s'), '.0f')} s).",
        "",
    ]
    fg = data.get("fastgen")
    if fg:
        d, f = fg.get("default", {}), fg.get("fast", {})
        lines += [
            "### Fast rollouts (`fast_generation=True`) vs TRL's default `generate`",
            "",
            f"Policy: {fg.get('weights')}; preset `dipo`; decoding step compiled: {fg.get('compiled')}; new "
            f"compiled graphs after the first fast step: {f.get('new_compiled_graphs_after_first_step')}.",
            "",
            "| path | rollout tokens/s | rollout s | step s | first step s (warm-up) |",
            "|---|---|---|---|---|",
            f"| default | {fmt(d.get('median_rollout_tokens_per_s'), '.0f')} | {fmt(d.get('median_rollout_s'))} | "
            f"{fmt(d.get('median_step_s'))} | {fmt(d.get('first_step_s'), '.1f')} |",
            f"| fast_generation | {fmt(f.get('median_rollout_tokens_per_s'), '.0f')} | "
            f"{fmt(f.get('median_rollout_s'))} | {fmt(f.get('median_step_s'))} | "
            f"{fmt(f.get('first_step_s'), '.1f')} |",
            f"| **speed-up** | **{fmt(fg.get('rollout_speedup'), '.2f')}×** (target ≥ 5) | | "
            f"**{fmt(fg.get('step_speedup'), '.2f')}×** (target ≥ 3) | |",
            "",
        ]
        lp = fg.get("logprob_check")
        if lp:
            lines += [
                "| log-prob check (sampler vs reference forward) | tokens | max \\|Δ\\| | mean \\|Δ\\| |",
                "|---|---|---|---|",
                *[
                    f"| {name} | {lp[name]['tokens']} | {fmt(lp[name]['max_abs_diff'], '.2e')} | "
                    f"{fmt(lp[name]['mean_abs_diff'], '.2e')} |"
                    for name in ("default", "fast")
                ],
                "",
                f"Log-prob check passed: {lp.get('pass')} (fast mean |Δ| ≤ 1.5 × default + 1e-3). Greedy: "
                f"{fmt(fg.get('greedy_check', {}).get('identical_rows'))} of rows identical, mean agreeing prefix "
                f"{fmt(fg.get('greedy_check', {}).get('mean_agreeing_prefix'))}. Generation configs differ only in: "
                f"{', '.join(sorted(fg.get('generation_config_diff', {})))}.",
                "",
            ]
    ov = data.get("overhead")
    if ov:
        lines += [
            "### Overhead: DAPO vs DiPO, same policy, interleaved",
            "",
            f"Generation path: {ov.get('path')}; {ov.get('note')}.",
            "",
            "| DAPO step s | DiPO step s | ratio (medians) | median per-round ratio | DiPO work ms/step | target |",
            "|---|---|---|---|---|---|",
            f"| {fmt(ov.get('dapo_median_step_s'))} | {fmt(ov.get('dipo_median_step_s'))} | "
            f"**{fmt(ov.get('ratio'))}** | {fmt(ov.get('median_round_ratio'))} | "
            f"{fmt(ov.get('dipo_work_median_ms'), '.1f')} | ≤ 1.02 |",
            "",
        ]
    le = data.get("learning")
    if le and le.get("warmstart"):
        ws = le["warmstart"]
        k = le["sizes"].get("k")
        lines += [
            "### Learning: arithmetic demo task, larger from-scratch model",
            "",
            f"Model: Llama, hidden {ws['model']['hidden_size']}, {ws['model']['num_hidden_layers']} layers "
            f"({ws['num_parameters']:,} parameters), warm start {ws['sft']['steps']} SFT steps "
            f"({fmt(ws['sft_seconds'], '.0f')} s); RL {le['sizes'].get('rl_steps')} steps × "
            f"{le['sizes'].get('rl_prompts_per_step')} prompts × G {le['sizes'].get('rl_generations')}. Warm start "
            f"held-out mean@{k} {fmt(ws['heldout']['mean_at_k'])}, greedy {fmt(ws['heldout']['greedy'])}.",
            "",
            f"| method | seeds | held-out mean@{k} (mean ± std) | per seed | greedy |",
            "|---|---|---|---|---|",
        ]
        for name, row in le.get("summary", {}).items():
            lines.append(
                f"| {name} | {row['seeds']} | {fmt(row['mean_at_k'])} ± {fmt(row['mean_at_k_std'])} | "
                f"{', '.join(fmt(v) for v in row['mean_at_k_per_seed'])} | {fmt(row['greedy'])} |"
            )
        if le.get("skipped"):
            lines.append(f"\nSkipped (time budget): {', '.join(le['skipped'])}.")
        lines.append("")
    return "\n".join(lines)


def write_plots(data: dict[str, Any], out: Path) -> list[str]:
    from dipo.reports.plots import pyplot, save_figure

    plt = pyplot()

    written = []
    fg = data.get("fastgen")
    if fg and "rollout_speedup" in fg:
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
        names = ["default", "fast_generation"]
        axes[0].bar(names, [fg["default"]["median_rollout_tokens_per_s"], fg["fast"]["median_rollout_tokens_per_s"]])
        axes[0].set_title(f"rollout tokens/s ({fg['rollout_speedup']:.2f}×)")
        axes[1].bar(names, [fg["default"]["median_step_s"], fg["fast"]["median_step_s"]], color="tab:orange")
        axes[1].set_title(f"step time s ({fg['step_speedup']:.2f}×)")
        save_figure(fig, out / "fastgen.png", dpi=120)
        written.append("fastgen.png")
    ov = data.get("overhead")
    if ov and ov.get("rounds"):
        fig, ax = plt.subplots(figsize=(6, 3.2))
        for preset, color in (("dapo", "tab:blue"), ("dipo", "tab:green")):
            xs, ys = [], []
            for i, rnd in enumerate(ov["rounds"]):
                if rnd["preset"] == preset:
                    xs += [i] * len(rnd["step_s"])
                    ys += rnd["step_s"]
            ax.scatter(xs, ys, label=preset, color=color, s=14)
        ax.set_xlabel("round (interleaved)")
        ax.set_ylabel("step s")
        ax.set_title(f"DiPO / DAPO step time: {ov.get('ratio', math.nan):.3f}")
        ax.legend()
        save_figure(fig, out / "overhead.png", dpi=120)
        written.append("overhead.png")
    le = data.get("learning")
    if le and le.get("runs"):
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
        colors = {"grpo": "tab:blue", "dapo": "tab:orange", "dipo": "tab:green"}
        for run in le["runs"]:
            axes[0].plot(run["train_reward"], color=colors.get(run["method"]), alpha=0.6, lw=1)
        axes[0].set_title("training reward (per run)")
        axes[0].set_xlabel("step")
        for i, (name, row) in enumerate(le.get("summary", {}).items()):
            axes[1].bar(i, row["mean_at_k"], color=colors.get(name))
            axes[1].scatter([i] * len(row["mean_at_k_per_seed"]), row["mean_at_k_per_seed"], color="k", s=10)
        axes[1].set_xticks(range(len(le.get("summary", {}))), list(le.get("summary", {})))
        axes[1].set_title(f"held-out mean@{le['sizes'].get('k')}")
        save_figure(fig, out / "learning.png", dpi=120)
        written.append("learning.png")
    return written


def print_summary(data: dict[str, Any]) -> None:
    log("summary")
    fg, ov, le = data.get("fastgen"), data.get("overhead"), data.get("learning")
    if fg and "rollout_speedup" in fg:
        print(
            f"  fast rollouts: {fg['default']['median_rollout_tokens_per_s']:.0f} -> "
            f"{fg['fast']['median_rollout_tokens_per_s']:.0f} tokens/s ({fg['rollout_speedup']:.2f}×, target ≥ 5); "
            f"step {fg['default']['median_step_s']:.3f} -> {fg['fast']['median_step_s']:.3f} s "
            f"({fg['step_speedup']:.2f}×, target ≥ 3); compiled={fg.get('compiled')}"
        )
        if "logprob_check" in fg:
            lp = fg["logprob_check"]
            print(
                f"  log-probs vs reference: fast max|Δ| {lp['fast']['max_abs_diff']:.2e}, default max|Δ| "
                f"{lp['default']['max_abs_diff']:.2e}, pass={lp['pass']}; greedy identical rows "
                f"{fg['greedy_check']['identical_rows']:.3f}"
            )
    if ov and "ratio" in ov:
        print(
            f"  overhead: DAPO {ov['dapo_median_step_s']:.3f} s, DiPO {ov['dipo_median_step_s']:.3f} s per step, "
            f"ratio {ov['ratio']:.3f} (target ≤ 1.02), DiPO work {ov['dipo_work_median_ms']:.1f} ms/step"
        )
    if le and le.get("summary"):
        for name, row in le["summary"].items():
            print(
                f"  learning: {name}: held-out mean@{le['sizes']['k']} {row['mean_at_k']:.3f} ({row['seeds']} seeds)"
            )


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
    sizes = SIZES[size] if args.seeds is None else replace(SIZES[size], seeds=tuple(args.seeds))
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
        "sizes": asdict(sizes),
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
                sizes, device, work, args.policy, list(dict.fromkeys(keys)), eager_compile=args.cpu_eager_compile
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
