"""The sampling call every sampler shares (``dipo.evaluation.decoding``), and held-out evaluation going through it."""

from __future__ import annotations

import pytest
import torch
from transformers.integrations import sdpa_attention

from dipo.evaluation.decoding import response_end, sample_sequences
from dipo.evaluation.generation import SamplingConfig, encode_prompts, generate
from dipo.testing import build_tiny_model, build_tokenizer

PROMPTS = ["what is 1 + 2", "3", "what is 4"]  # different lengths: left-padded batches


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    model = build_tiny_model(seed=3, vocab_size=32, hidden_size=32, num_layers=2).eval()  # grouped-query attention
    return model, build_tokenizer()


def test_response_end():
    assert response_end([5, 6, 2, 2], stop=[2]) == (3, False)  # the first EOS, included
    assert response_end([2], stop=[2, 9]) == (1, False)
    assert response_end([9, 5], stop=[2, 9]) == (1, False)  # any stop id
    assert response_end([5, 6, 7], stop=[2]) == (3, True)  # no EOS: truncated, all tokens kept
    assert response_end([], stop=[2]) == (0, True)


def test_evaluation_prefills_each_prompt_once_and_decodes_without_copying_the_cache(policy, monkeypatch):
    """``generate`` (held-out evaluation): one prefill of B prompts, then one token for each of the B·k rows per step,
    and transformers' repeat_kv only at that prefill; the draws equal the plain ``generate`` path's."""
    model, tokenizer = policy
    config = SamplingConfig(k=4, max_new_tokens=6, temperature=0.8, top_p=1.0, batch_size=3, seed=1)
    widths: list[tuple[int, int]] = []
    hook = model.register_forward_pre_hook(
        lambda _m, _a, kw: widths.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    copies = []
    original = sdpa_attention.repeat_kv
    monkeypatch.setattr(sdpa_attention, "repeat_kv", lambda h, n: copies.append(h.shape) or original(h, n))
    try:
        fast = generate(model, tokenizer, PROMPTS, config)
    finally:
        hook.remove()
    width = encode_prompts(PROMPTS, tokenizer, None, "cpu")["input_ids"].shape[1]
    assert widths[0] == (3, width - 1) and all(shape == (12, 1) for shape in widths[1:])
    assert len(copies) == 2 * 2  # keys and values of 2 layers, prefill only
    copies.clear()
    plain = generate(model, tokenizer, PROMPTS, config, share_prompt=False, grouped_attention=False)
    assert len(copies) > 2 * 2 * 5  # the plain path copies the cache at every step
    assert fast.texts == plain.texts and fast.num_tokens == plain.num_tokens and fast.truncated == plain.truncated
    assert any(n > 1 for row in fast.num_tokens for n in row)  # responses long enough to test the decode steps


def _plain_generate(model, tokenizer, temperature: float, k: int) -> torch.Tensor:
    """transformers' ``generate`` on PROMPTS, which honours the generation config's repetition penalty."""
    enc = encode_prompts(PROMPTS, tokenizer, None, "cpu")
    sampled = {"temperature": temperature, "top_k": 0, "num_return_sequences": k} if temperature else {}
    torch.manual_seed(2)
    return model.generate(
        **enc, max_new_tokens=8, do_sample=temperature > 0, pad_token_id=tokenizer.pad_token_id, **sampled
    )


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_evaluation_ignores_a_repetition_penalty_in_the_generation_config(policy, temperature):
    """As TRL samples (and as ``dipo probe`` does): the checkpoint's ``repetition_penalty`` does not change the draws,
    greedy or sampled."""
    model, tokenizer = policy
    k = 1 if temperature == 0 else 4
    config = SamplingConfig(k=k, max_new_tokens=8, temperature=temperature, top_p=1.0, batch_size=3, seed=2)
    plain = generate(model, tokenizer, PROMPTS, config)
    unpenalised = _plain_generate(model, tokenizer, temperature, k)
    original = model.generation_config.repetition_penalty
    model.generation_config.repetition_penalty = 3.0
    try:
        penalised = generate(model, tokenizer, PROMPTS, config)
        honoured = _plain_generate(model, tokenizer, temperature, k)
    finally:
        model.generation_config.repetition_penalty = original
    assert penalised.texts == plain.texts
    assert not torch.equal(honoured, unpenalised)  # a penalty of 3 would change them (else this test could not fail)


def test_greedy_needs_one_sample(policy):
    model, tokenizer = policy
    enc = encode_prompts(PROMPTS, tokenizer, None, "cpu")
    with pytest.raises(ValueError, match="k=1"):
        sample_sequences(model, enc, k=2, max_new_tokens=2, temperature=0, top_p=1.0, eos_token_id=[1], pad_token_id=0)
