"""Sampling for ``dipo probe``: k responses per prompt with the per-token log-probs of the policy that sampled them.

**Which distribution.** The log-prob of response token y_t is ``log softmax(z_t / T)[y_t]``, where ``z_t`` are the
model's raw logits at that step (recorded while sampling by :func:`dipo.evaluation.decoding.sample_sequences`) and
``T`` the sampling temperature: the *tempered* policy, exactly what TRL's old / sampler per-token log-probs are (TRL
divides the logits by the temperature; it applies no top-p / top-k truncation to them). With ``top_p = 1`` this is the
distribution the tokens were drawn from; with ``top_p < 1`` tokens were drawn from the truncated version of it, as in
training. As in TRL, a repetition penalty in the model's generation config is overridden (``repetition_penalty=1``):
many instruct checkpoints ship one (Qwen2.5-Instruct: 1.05–1.1), and it would change the sampled distribution.

**Which tokens.** Response tokens up to and including the first EOS (TRL's completion mask); prompt and padding
tokens are excluded. A response that hits the length limit without EOS is *truncated*; the analysis decides whether
it gets a PPL (DAPO's overlong filtering masks it out of the loss and so out of DiPO's queue).

Records are plain dicts, one per sample, appended to ``samples.jsonl`` one batch at a time so that an interrupted
probe resumes where it stopped (``dipo probe --resume``) and reproduces the same samples: batches are formed in a
fixed order (prompts sorted by length) and batch b is seeded with ``seed + b`` whatever was done before.

**Which weights sample** (``sample_dtype``). The log-probs are always those of the model as loaded (the policy; fp32
on CPU). With ``sample_dtype="bf16"`` a bf16 copy of it draws the tokens and one teacher-forced pass of the policy
recomputes the log-probs of the drawn tokens, exactly as training computes its old log-probs from a vLLM / bf16
sampler's tokens: the PPL is the policy's, the tokens come from its bf16 rounding. ``sample_dtype="fp32"`` samples
with the policy itself (fp32 on CPU) and records its log-probs while it samples. ``"auto"`` (default) samples with
the policy's own dtype. bf16 drawing pays only where bf16 matmuls are native, and there the rescoring pass eats the
gain: on a CPU with ``avx512_bf16`` (2026-12-07) bf16 drawing alone ran 1.73x fp32, but bf16 + rescoring ran 0.46x on
16-token answers and 1.11x on 256-token chains (an AVX2-only CPU runs bf16 matmuls several times slower than fp32;
on a GPU the policy is loaded in bf16 already). See ``benchmarks/sampling_bench.py`` and
``docs/results/sampling.md``. When the sampling dtype is the policy's own, no copy is made and nothing is recomputed.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from dipo.evaluation.decoding import mask_positions, response_end, sample_sequences
from dipo.evaluation.generation import SamplingConfig, encode_prompts, eos_ids, render
from dipo.tasks.data import TaskRow

#: ``--sample_dtype`` choices: the dtype of the weights that draw the tokens.
SAMPLE_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}
SAMPLE_DTYPE_CHOICES = ("auto", "bf16", "fp32")
DEFAULT_SAMPLE_DTYPE = "auto"
#: Upper bound on the fp32 logits materialised at once by the rescoring pass (bytes).
RESCORE_LOGITS_BYTES = 1 << 29


def resolve_sample_dtype(sample_dtype: str, model: Any) -> str:
    """``bf16`` / ``fp32`` / ``fp16``: the choice itself, or for ``auto`` the policy's own dtype (no copy)."""
    if sample_dtype not in SAMPLE_DTYPE_CHOICES and sample_dtype not in SAMPLE_DTYPES:
        raise ValueError(f"sample_dtype must be one of {', '.join(SAMPLE_DTYPE_CHOICES)}, got {sample_dtype!r}")
    if sample_dtype != "auto":
        return sample_dtype
    own = {dtype: name for name, dtype in SAMPLE_DTYPES.items()}
    return own.get(next(model.parameters()).dtype, "fp32")


def sampling_model(model: Any, sample_dtype: str = DEFAULT_SAMPLE_DTYPE) -> Any:
    """The model that draws the tokens: ``model`` itself if already in ``sample_dtype`` (resolved by
    :func:`resolve_sample_dtype`), else a copy in it.

    The copy shares nothing with ``model`` and never holds a second full-precision copy of the weights: each parameter
    is cast on its own (tied weights stay tied), then the small buffers are copied.
    """
    dtype = SAMPLE_DTYPES[resolve_sample_dtype(sample_dtype, model)]
    if next(model.parameters()).dtype == dtype:
        return model
    memo: dict[int, Any] = {
        id(p): torch.nn.Parameter(p.detach().to(dtype), requires_grad=False) for p in model.parameters()
    }
    return copy.deepcopy(model, memo).to(dtype).eval()


@torch.inference_mode()
def rescore(
    model: Any, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, completion: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``log softmax(z_t / T)[y_t]`` of every completion token under ``model``, from one teacher-forced pass.

    ``prompt_ids`` / ``prompt_mask``: the left-padded prompts, one row per completion row; ``completion``: the
    generated tokens (padding after EOS does not change the earlier positions). Positions follow the attention mask,
    as in ``generate``. Rows are processed in chunks that keep the fp32 logits under ``RESCORE_LOGITS_BYTES``.
    """
    ids = torch.cat([prompt_ids, completion], dim=1)
    mask = torch.cat([prompt_mask, torch.ones_like(completion)], dim=1)
    positions = mask_positions(mask)
    width = completion.shape[1]
    vocab = model.get_output_embeddings().weight.shape[0]
    chunk = max(1, RESCORE_LOGITS_BYTES // (4 * (width + 1) * vocab))
    out = []
    for start in range(0, ids.shape[0], chunk):
        rows = slice(start, start + chunk)
        logits = model(
            input_ids=ids[rows], attention_mask=mask[rows], position_ids=positions[rows], logits_to_keep=width + 1
        ).logits[:, :-1]
        logps = torch.log_softmax(logits.float() / temperature, dim=-1)
        out.append(logps.gather(-1, completion[rows].unsqueeze(-1)).squeeze(-1))
    return torch.cat(out)


def batch_plan(rows: Sequence[TaskRow], tokenizer: Any, config: SamplingConfig) -> list[list[int]]:
    """Row indices of each generation batch: rows sorted by rendered prompt length, ``batch_size`` per batch."""
    lengths = [len(render(r.prompt, tokenizer, config.chat_template)) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: (lengths[i], i))
    return [order[b : b + config.batch_size] for b in range(0, len(order), config.batch_size)]


@torch.inference_mode()
def sample_batch(
    model: Any,
    tokenizer: Any,
    rows: Sequence[TaskRow],
    config: SamplingConfig,
    batch_index: int,
    sampler: Any = None,
    prune_finished: bool = True,
    share_prompt: bool = True,
    grouped_attention: bool = True,
) -> list[list[dict[str, Any]]]:
    """``config.k`` samples of every row (one :func:`~dipo.evaluation.decoding.sample_sequences` call), each with
    its per-token tempered log-probs.

    ``sampler`` (default ``model``) draws the tokens; when it is not ``model``, the log-probs are recomputed by
    :func:`rescore` with ``model``. ``prune_finished=False`` samples with ``generate`` (which keeps computing ended
    responses) instead of the pruned decode loop; ``share_prompt=False`` prefills each of the k copies of a prompt;
    ``grouped_attention=False`` keeps transformers' sdpa at decode steps instead of
    :func:`~dipo.evaluation.attention.grouped_decode_sdpa` (all three: reference paths of
    ``benchmarks/sampling_bench.py``).

    Returns, per row, ``k`` dicts: ``completion`` (decoded, special tokens dropped), ``num_tokens`` (incl. EOS),
    ``truncated`` (no EOS within ``max_new_tokens``), ``token_ids`` and ``token_logps`` (one per counted token).
    """
    if config.temperature <= 0:
        raise ValueError("dipo probe needs sampling (temperature > 0): the premise is about sampled groups")
    device = next(model.parameters()).device
    enc = encode_prompts([r.prompt for r in rows], tokenizer, config.chat_template, device)
    stop = eos_ids(model, tokenizer)
    sampler = model if sampler is None else sampler
    torch.manual_seed(config.seed + batch_index)
    completion, token_logps = sample_sequences(
        sampler,
        enc,
        k=config.k,
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        eos_token_id=stop,
        pad_token_id=tokenizer.pad_token_id,
        record_logps=sampler is model,  # else the policy rescores the drawn tokens below
        prune_finished=prune_finished,
        share_prompt=share_prompt,
        grouped_attention=grouped_attention,
    )
    if token_logps is None:
        prompt_ids = enc["input_ids"].repeat_interleave(config.k, dim=0)
        prompt_mask = enc["attention_mask"].repeat_interleave(config.k, dim=0)
        token_logps = rescore(model, prompt_ids, prompt_mask, completion, config.temperature)
    token_logps = token_logps.cpu()
    completion = completion.cpu()
    results: list[list[dict[str, Any]]] = [[] for _ in rows]
    for seq in range(completion.shape[0]):
        ids = completion[seq].tolist()
        length, truncated = response_end(ids, stop)
        results[seq // config.k].append(
            {
                "completion": tokenizer.decode(ids[:length], skip_special_tokens=True),
                "num_tokens": length,
                "truncated": truncated,
                "token_ids": ids[:length],
                "token_logps": [round(float(x), 6) for x in token_logps[seq, :length]],
            }
        )
    return results


def sample_rows(
    model: Any,
    tokenizer: Any,
    rows: Sequence[TaskRow],
    config: SamplingConfig,
    on_batch: Callable[[list[int], list[list[dict[str, Any]]], float], None],
    done: set[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
    sample_dtype: str = DEFAULT_SAMPLE_DTYPE,
) -> float:
    """Sample every row batch by batch, calling ``on_batch(row_indices, samples, seconds)`` after each batch.

    ``sample_dtype``: the dtype of the weights that draw the tokens (see the module docstring); the log-probs are
    ``model``'s in every case.

    Batches whose rows are all in ``done`` (row ids) are skipped; the others keep their batch index (and so their
    seed), so a resumed probe produces the samples an uninterrupted one would have. Returns the seconds spent.
    """
    done = done or set()
    sampler = sampling_model(model, sample_dtype)
    plan = batch_plan(rows, tokenizer, config)
    spent = 0.0
    finished = 0
    for batch_index, idx in enumerate(plan):
        if all(rows[i].id in done for i in idx):
            finished += len(idx)
            continue
        start = time.perf_counter()
        samples = sample_batch(model, tokenizer, [rows[i] for i in idx], config, batch_index, sampler)
        seconds = time.perf_counter() - start
        spent += seconds
        on_batch(idx, samples, seconds)
        finished += len(idx)
        if progress:
            progress(finished, len(rows))
    return spent
