"""Per-step instruments of the demo's RL runs: what the policy's entropy does where DiPO acts.

* :func:`completion_logits` — one no-grad forward pass over ``prompt + completion_ids`` (the recorded batch).
* :func:`entropy_split` — mean entropy of the *surface* decision (another leading space or start the answer: the
  binary entropy of P(space) before the first non-space token) and of the *answer* digits (entropy of the digit
  distribution, renormalised over digits, where a digit was emitted).
* :class:`BatchRecorder` — a TRL reward function wrapping the verifier that keeps each training batch and its
  per-response token entropy under the sampling policy; after the update, :meth:`BatchRecorder.entropy_shift` measures
  the entropy of the same responses again. Averaged over the groups BRR reallocated, this is the paper's direction
  claim (spec §8: the maximum-PPL reward raises entropy, the penalty lowers it) measured at the prompt's next visit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase


@torch.no_grad()
def completion_logits(
    model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, prompts: list[str], completion_ids: list[list[int]]
) -> tuple[Tensor, Tensor, Tensor]:
    """Logits predicting each completion token, the completion ids and their mask, all ``[N, T(, V)]`` on CPU.

    Prompts are left-padded and completions right-padded, so position ``t`` of every row is completion token ``t``.
    """
    prompt_ids = tokenizer(list(prompts))["input_ids"]
    width_p = max(map(len, prompt_ids))
    width_c = max(1, max(map(len, completion_ids)))
    n = len(prompt_ids)
    ids = torch.full((n, width_p + width_c), tokenizer.pad_token_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    cmask = torch.zeros((n, width_c), dtype=torch.float32)
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids, strict=True)):
        ids[i, width_p - len(p) : width_p] = torch.tensor(p)
        attn[i, width_p - len(p) : width_p] = 1
        if c:
            ids[i, width_p : width_p + len(c)] = torch.tensor(list(c))
            attn[i, width_p : width_p + len(c)] = 1
            cmask[i, : len(c)] = 1
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits[:, width_p - 1 : -1]
    model.train(was_training)
    return logits.float().cpu(), ids[:, width_p:], cmask


def token_entropy(logits: Tensor) -> Tensor:
    """Entropy (nats) of the softmax of ``logits`` over the last dimension."""
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def entropy_split(logits: Tensor, ids: Tensor, mask: Tensor, space_id: int, digit_ids: list[int]) -> dict[str, float]:
    """Mean surface entropy (binary, P(space) before the first non-space token) and answer entropy (over digits, where
    a digit was emitted); NaN where no such position exists."""
    probs = torch.softmax(logits, dim=-1)
    is_space = (ids == space_id) & (mask > 0)
    # Surface positions: every position up to and including the first non-space token.
    before = torch.cumprod(is_space.long(), dim=1)
    surface_pos = (torch.cat([torch.ones_like(before[:, :1]), before[:, :-1]], dim=1) > 0) & (mask > 0)
    p_space = probs[..., space_id].clamp(1e-12, 1 - 1e-12)
    h_surface = -(p_space * p_space.log() + (1 - p_space) * (1 - p_space).log())
    digit = torch.zeros_like(ids, dtype=torch.bool)
    for d in digit_ids:
        digit |= ids == d
    digit &= mask > 0
    h_answer = token_entropy(logits[..., digit_ids])
    return {
        "surface_entropy": float(h_surface[surface_pos].mean()) if surface_pos.any() else math.nan,
        "answer_entropy": float(h_answer[digit].mean()) if digit.any() else math.nan,
    }


def sequence_entropy(logits: Tensor, mask: Tensor) -> Tensor:
    """``[N]`` mean token entropy of each completion (NaN for an empty one)."""
    h = token_entropy(logits)
    n = mask.sum(1)
    return torch.where(n > 0, (h * mask).sum(1) / n.clamp(min=1), torch.full_like(n, math.nan))


class BatchRecorder:
    """TRL reward function: the verifier's rewards, unchanged, plus a record of the batch for the instruments.

    Set ``recorder.model = trainer.model`` after building the trainer. Each call (before the update of its step)
    stores prompts, completion ids, the per-response mean token entropy and the surface/answer entropy split under
    the sampling policy.
    """

    def __init__(self, verifier: Callable[..., list[float]], tokenizer: PreTrainedTokenizerBase) -> None:
        self.verifier, self.tokenizer = verifier, tokenizer
        self.model: torch.nn.Module | None = None
        self.__name__ = getattr(verifier, "__name__", "verifier")
        vocab = tokenizer.get_vocab()
        self.space_id = vocab.get(" ")
        self.digit_ids = [vocab[d] for d in "0123456789" if d in vocab]
        self.prompts: list[str] = []
        self.completion_ids: list[list[int]] = []
        self.entropy_before: Tensor | None = None
        self.split: dict[str, float] = {}

    def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: list[list[int]], **kwargs: Any):
        rewards = self.verifier(prompts=prompts, completions=completions, **kwargs)
        if self.model is not None:
            self.prompts = [str(p) for p in prompts]
            self.completion_ids = [list(c) for c in completion_ids]
            logits, ids, mask = completion_logits(self.model, self.tokenizer, self.prompts, self.completion_ids)
            self.entropy_before = sequence_entropy(logits, mask)
            if self.space_id is not None and self.digit_ids:
                self.split = entropy_split(logits, ids, mask, self.space_id, self.digit_ids)
        return rewards

    def entropy_shift(self, rows: Tensor) -> float:
        """Mean over ``rows`` (bool ``[N]``) of (entropy under the current policy − entropy at sampling time)."""
        return self.entropy_shifts({"rows": rows})["rows"]

    def entropy_shifts(self, subsets: dict[str, Tensor]) -> dict[str, float]:
        """:meth:`entropy_shift` of several row subsets, from ONE forward pass over their union (NaN for an empty
        subset)."""
        out = {name: math.nan for name in subsets}
        if self.model is None or self.entropy_before is None:
            return out
        union = torch.zeros_like(self.entropy_before, dtype=torch.bool)
        for rows in subsets.values():
            union |= rows
        if not bool(union.any()):
            return out
        idx = union.nonzero().flatten().tolist()
        logits, _, mask = completion_logits(
            self.model, self.tokenizer, [self.prompts[i] for i in idx], [self.completion_ids[i] for i in idx]
        )
        delta = torch.full_like(self.entropy_before, math.nan)
        delta[idx] = sequence_entropy(logits, mask) - self.entropy_before[idx]
        for name, rows in subsets.items():
            chosen = delta[rows]
            chosen = chosen[~torch.isnan(chosen)]
            out[name] = float(chosen.mean()) if chosen.numel() else math.nan
        return out
