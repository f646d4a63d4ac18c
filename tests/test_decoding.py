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
    """``generate`` (held-out evaluation): one prefill of the B prompts, then one token per unfinished row per step
    (at most B·k rows, fewer as responses end), and transformers' repeat_kv only at that prefill; the plain path
    (``generate`` on B·k copies) copies the cache at every step."""
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
    assert widths[0] == (3, width) and all(w == 1 and rows <= 12 for rows, w in widths[1:])
    assert [rows for rows, _ in widths[1:]] == sorted((rows for rows, _ in widths[1:]), reverse=True)
    assert len(copies) == 2 * 2  # keys and values of 2 layers, prefill only
    copies.clear()
    plain = generate(
        model, tokenizer, PROMPTS, config, prune_finished=False, share_prompt=False, grouped_attention=False
    )
    assert len(copies) > 2 * 2 * 5  # the plain path copies the cache at every step
    assert [len(t) for t in fast.texts] == [len(t) for t in plain.texts] == [4, 4, 4]
    assert any(n > 1 for row in fast.num_tokens for n in row)  # responses long enough to test the decode steps


NEVER = [1000]  # an EOS id outside the vocabulary: no response ends


@pytest.mark.parametrize("share_prompt", [True, False])
@pytest.mark.parametrize(("temperature", "top_p"), [(0.7, 1.0), (1.3, 0.8)])
def test_pruned_loop_draws_generates_tokens_while_no_response_has_ended(policy, temperature, top_p, share_prompt):
    """Until a row ends, the pruned loop is ``generate``'s sampling step: the same draws from the same seed, and the
    recorded log-probs equal the recorder's on ``generate``."""
    model, tokenizer = policy
    enc = encode_prompts(PROMPTS, tokenizer, None, "cpu")
    common = {"k": 4, "max_new_tokens": 7, "temperature": temperature, "top_p": top_p, "eos_token_id": NEVER,
              "pad_token_id": tokenizer.pad_token_id, "record_logps": True, "share_prompt": share_prompt}  # fmt: skip
    torch.manual_seed(3)
    pruned, pruned_logps = sample_sequences(model, enc, **common)
    torch.manual_seed(3)
    reference, reference_logps = sample_sequences(model, enc, prune_finished=False, **common)
    assert pruned.shape == reference.shape == (12, 7)
    assert torch.equal(pruned, reference)
    assert torch.allclose(pruned_logps, reference_logps, atol=2e-6)


def _frequent_token(model, tokenizer, enc) -> int:
    """The token drawn most often in a first pass: as EOS, it ends responses at different steps."""
    torch.manual_seed(0)
    responses, _ = sample_sequences(model, enc, k=4, max_new_tokens=6, temperature=1.0, top_p=1.0, eos_token_id=NEVER,
                                    pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    return int(torch.mode(responses.flatten()).values)


def test_pruned_loop_keeps_the_policys_log_probs_as_rows_leave(policy):
    """Responses end at different steps; every recorded log-prob equals a teacher-forced pass over the prompt and
    the response drawn (so positions, padding and cache stay right as rows leave the batch), and each response is
    padded after its EOS."""
    from dipo.probe.sampling import rescore

    model, tokenizer = policy
    enc = encode_prompts(PROMPTS, tokenizer, None, "cpu")
    eos = _frequent_token(model, tokenizer, enc)
    torch.manual_seed(4)
    pad = tokenizer.pad_token_id
    responses, logps = sample_sequences(model, enc, k=4, max_new_tokens=8, temperature=0.9, top_p=1.0,
                                        eos_token_id=[eos], pad_token_id=pad, record_logps=True)  # fmt: skip
    ends = [response_end(row.tolist(), [eos]) for row in responses]
    lengths = [n for n, _ in ends]
    assert min(lengths) < max(lengths) and not all(truncated for _, truncated in ends)  # rows left at different steps
    prompt_ids, prompt_mask = (enc[key].repeat_interleave(4, dim=0) for key in ("input_ids", "attention_mask"))
    expected = rescore(model, prompt_ids, prompt_mask, responses, 0.9)
    for row, (n, _) in enumerate(ends):
        assert torch.allclose(logps[row, :n], expected[row, :n], atol=1e-5)
        assert (responses[row, n:] == pad).all()


def test_pruned_greedy_equals_generate_with_responses_ending(policy):
    """Greedy decoding draws nothing at random, so the pruned loop must give ``generate``'s responses exactly, with
    rows ending at different steps."""
    model, tokenizer = policy
    enc = encode_prompts(PROMPTS, tokenizer, None, "cpu")
    common = {"k": 1, "max_new_tokens": 8, "temperature": 0, "top_p": 1.0, "pad_token_id": tokenizer.pad_token_id}
    free, _ = sample_sequences(model, enc, eos_token_id=NEVER, **common)
    eos = int(free[0, 2])  # row 0 ends by its third token; the others go on unless they draw it
    pruned, _ = sample_sequences(model, enc, eos_token_id=[eos], **common)
    reference, _ = sample_sequences(model, enc, eos_token_id=[eos], prune_finished=False, **common)
    lengths = [response_end(row.tolist(), [eos])[0] for row in reference]
    assert min(lengths) <= 3 and max(lengths) > 3
    for row, n in enumerate(lengths):
        assert pruned[row, :n].tolist() == reference[row, :n].tolist()


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


def test_greedy_needs_one_sample_and_records_no_log_probs(policy):
    model, tokenizer = policy
    enc = encode_prompts(PROMPTS, tokenizer, None, "cpu")
    for prune in (True, False):
        with pytest.raises(ValueError, match="k=1"):
            sample_sequences(model, enc, k=2, max_new_tokens=2, temperature=0, top_p=1.0, eos_token_id=[1],
                             pad_token_id=0, prune_finished=prune)  # fmt: skip
        with pytest.raises(ValueError, match="record_logps needs sampling"):
            sample_sequences(model, enc, k=1, max_new_tokens=2, temperature=0, top_p=1.0, eos_token_id=[1],
                             pad_token_id=0, prune_finished=prune, record_logps=True)  # fmt: skip
