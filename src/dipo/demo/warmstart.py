"""Supervised warm start of the demo model, cached on disk with a version key.

A short SFT phase on the training split leaves the model *mixed*: easy levels mostly right, hard levels mostly
wrong — the regime where a batch holds easy, normal and hard groups at once (spec §1). The result is a pure
function of (task, model size, SFT settings, seed), so it is cached under ``$DIPO_CACHE`` (default
``~/.cache/dipo``) and a second run loads it in a fraction of a second.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from dipo.demo.model import ModelSpec, build_model
from dipo.demo.regimes import Teacher
from dipo.demo.tokenizer import build_tokenizer
from dipo.tasks.arithmetic import ArithmeticItem, ArithmeticTask

WARMSTART_VERSION = 2
"""Bump when the SFT recipe, tokenizer or model code changes so that stale caches are not reused."""


@dataclass(frozen=True)
class SFTConfig:
    """Short supervised phase: ``steps`` AdamW steps of ``batch_size`` examples, linear warm-up then decay.

    ``filler_prob``: share of SFT targets written with a leading space (``" 221"``). The verifier ignores surrounding
    whitespace, so both forms are correct: the model learns two correct answer paths of different perplexity, the
    analogue of the several correct reasoning paths of an LLM. Without it every item has exactly one correct string,
    whose PPL is fixed by P(correct) — then an all-correct group can never hold a high-PPL correct response (spec §5
    quadrant CH) and BRR's maximum-PPL penalty can never fire.
    """

    steps: int = 1800
    batch_size: int = 64
    learning_rate: float = 3e-3
    warmup_steps: int = 50
    seed: int = 0
    filler_prob: float = 0.3
    teacher: Teacher | None = None  # regime testbeds: targets written by a Teacher (filler_prob is then unused)


def cache_dir() -> Path:
    """``$DIPO_CACHE`` if set, else ``~/.cache/dipo``."""
    return Path(os.environ.get("DIPO_CACHE") or Path.home() / ".cache" / "dipo")


def warmstart_key(task: ArithmeticTask, spec: ModelSpec, sft: SFTConfig) -> str:
    """Version key of a warm start: hash of everything that determines the weights."""
    payload = json.dumps(
        {"v": WARMSTART_VERSION, "task": asdict(task), "model": spec.as_dict(), "sft": asdict(sft)}, sort_keys=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def sft_batch(
    items: list[ArithmeticItem],
    tokenizer: PreTrainedTokenizerBase,
    fillers: list[bool] | None = None,
    targets: list[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded ``prompt + answer + <eos>`` ids, attention mask, and labels (loss on answer and eos only).

    ``fillers[i]`` writes item i's answer with a leading space (see :class:`SFTConfig`); ``targets`` (e.g. a
    :class:`~dipo.demo.regimes.Teacher`'s samples) replace the answers altogether."""
    fillers = fillers or [False] * len(items)
    if targets is None:
        targets = [(" " if f else "") + it.answer for it, f in zip(items, fillers, strict=True)]
    prompts = tokenizer([it.prompt for it in items])["input_ids"]
    answers = tokenizer(targets)["input_ids"]
    seqs = [p + a + [tokenizer.eos_token_id] for p, a in zip(prompts, answers, strict=True)]
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for row, (seq, prompt) in enumerate(zip(seqs, prompts, strict=True)):
        off = width - len(seq)
        ids[row, off:] = torch.tensor(seq)
        mask[row, off:] = 1
        labels[row, off + len(prompt) :] = torch.tensor(seq[len(prompt) :])
    return ids, mask, labels


def supervised_finetune(
    model: LlamaForCausalLM,
    tokenizer: PreTrainedTokenizerBase,
    task: ArithmeticTask,
    sft: SFTConfig,
    progress: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Run the SFT phase in place; returns the loss per step. Deterministic given ``sft.seed``."""
    opt = torch.optim.AdamW(model.parameters(), lr=sft.learning_rate, weight_decay=0.0)

    def schedule(step: int) -> float:
        return min(1.0, (step + 1) / max(1, sft.warmup_steps)) * max(0.05, 1.0 - step / sft.steps)

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    losses: list[float] = []
    model.train()
    rng = random.Random(f"teacher:{sft.seed}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(sft.seed)
        for step in range(sft.steps):
            items = task.sample(sft.batch_size, seed=sft.seed * 1_000_003 + step, split="train")
            if sft.teacher is not None:
                targets = [sft.teacher.sample(it, task, rng) for it in items]
                batch = sft_batch(items, tokenizer, targets=targets)
            else:
                batch = sft_batch(items, tokenizer, (torch.rand(len(items)) < sft.filler_prob).tolist())
            ids, mask, labels = (t.to(model.device) for t in batch)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if progress is not None:
                progress(step, losses[-1])
    model.eval()
    return losses


def load_or_train_warmstart(
    task: ArithmeticTask,
    spec: ModelSpec,
    sft: SFTConfig,
    use_cache: bool = True,
    progress: Callable[[int, float], None] | None = None,
    device: str = "cpu",
) -> tuple[Path, dict[str, object]]:
    """Path of the warm-started model folder (``save_pretrained`` format, tokenizer included) and its info.

    Trains and caches it if missing; ``use_cache=False`` always retrains (into the same key folder). ``device``: where
    the SFT runs (another device than the CPU gets its own cache key: its numerics differ).
    """
    key = warmstart_key(task, spec, sft)
    path = cache_dir() / "warmstart" / (key if device == "cpu" else f"{key}-{device}")
    info_file = path / "warmstart.json"
    if use_cache and info_file.exists():
        info = json.loads(info_file.read_text())
        info["cached"] = True
        return path, info
    tokenizer = build_tokenizer()
    model = build_model(spec, tokenizer, seed=sft.seed).to(device)
    start = time.perf_counter()
    losses = supervised_finetune(model, tokenizer, task, sft, progress=progress)
    seconds = time.perf_counter() - start
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    info: dict[str, object] = {
        "version": WARMSTART_VERSION,
        "task": asdict(task),
        "model": spec.as_dict(),
        "sft": asdict(sft),
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:])),
        "sft_seconds": seconds,
    }
    (tmp / "warmstart.json").write_text(json.dumps(info, indent=2))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():  # another process won the race, or use_cache=False: replace it
        shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
    info["cached"] = False
    return path, info
