"""Grouped-query decode attention (``dipo.evaluation.attention``): transformers' sdpa result without its K/V copy."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers.integrations import sdpa_attention
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from dipo.evaluation.attention import GROUPED_DECODE_SDPA, grouped_decode_attention, grouped_decode_sdpa
from dipo.evaluation.generation import SamplingConfig
from dipo.probe.sampling import sample_batch
from dipo.tasks.data import TaskRow
from dipo.testing import build_tiny_model, build_tokenizer


def _inputs(batch=3, heads=6, kv_heads=2, q_len=1, length=9, dim=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    query = torch.randn(batch, heads, q_len, dim, generator=gen)
    key, value = (torch.randn(batch, kv_heads, length, dim, generator=gen) for _ in range(2))
    mask = torch.ones(batch, 1, q_len, length, dtype=torch.bool)
    mask[0, :, :, :4] = False  # a left-padded row
    module = SimpleNamespace(num_key_value_groups=heads // kv_heads, is_causal=True, training=False)
    return module, query, key, value, mask


@pytest.mark.parametrize("masked", [True, False])
def test_decode_step_equals_transformers_sdpa(masked):
    module, query, key, value, mask = _inputs()
    mask = mask if masked else None
    expected, _ = sdpa_attention_forward(module, query, key, value, mask, scaling=0.3)
    got, weights = grouped_decode_sdpa(module, query, key, value, mask, scaling=0.3)
    assert weights is None and got.shape == expected.shape == (3, 1, 6, 8)
    assert torch.allclose(got, expected, atol=1e-6)
    # the padded keys are ignored: changing them changes nothing
    key[0, :, :4] = 100.0
    assert masked is False or torch.allclose(grouped_decode_sdpa(module, query, key, value, mask, scaling=0.3)[0], got)


def test_other_shapes_go_to_transformers_sdpa_unchanged(monkeypatch):
    calls = []
    monkeypatch.setattr(
        "dipo.evaluation.attention.sdpa_attention_forward", lambda *a, **k: calls.append(a[1].shape) or ("ref", None)
    )
    module, query, key, value, mask = _inputs(q_len=3, length=3)
    assert grouped_decode_sdpa(module, query, key, value, mask)[0] == "ref"  # prefill
    module, query, key, value, mask = _inputs(heads=2, kv_heads=2)
    assert grouped_decode_sdpa(module, query, key, value, mask)[0] == "ref"  # no grouping
    module, query, key, value, mask = _inputs()
    assert grouped_decode_sdpa(module, query, key, value, mask.expand(3, 6, 1, 9))[0] == "ref"  # per-head mask
    assert grouped_decode_sdpa(module, query, key, value, mask, softcap=30.0)[0] == "ref"
    assert len(calls) == 4


def test_context_switches_sdpa_models_only_and_restores():
    model = build_tiny_model(seed=1)
    assert model.config._attn_implementation == "sdpa"
    with grouped_decode_attention(model) as switched:
        assert switched and model.config._attn_implementation == GROUPED_DECODE_SDPA
    assert model.config._attn_implementation == "sdpa"
    with pytest.raises(RuntimeError), grouped_decode_attention(model):
        raise RuntimeError("restored on error too")
    assert model.config._attn_implementation == "sdpa"
    model.config._attn_implementation = "eager"
    with grouped_decode_attention(model) as switched:
        assert not switched and model.config._attn_implementation == "eager"


def test_probe_sampling_decodes_without_copying_the_cache(monkeypatch):
    """In ``sample_batch`` transformers' repeat_kv runs only for the prefill (once per layer); every decode step of
    the grouped-query tiny model goes through the grouped path, and the samples equal those of plain sdpa."""
    torch.manual_seed(0)
    model, tokenizer = build_tiny_model(seed=3, vocab_size=32, hidden_size=32, num_layers=2).eval(), build_tokenizer()
    rows = [TaskRow(p, "", f"r{i}", "test") for i, p in enumerate(["what is 1 + 2", "3", "what is 4"])]
    config = SamplingConfig(k=4, max_new_tokens=6, temperature=0.7, top_p=1.0, batch_size=3)
    copies = []
    original = sdpa_attention.repeat_kv
    monkeypatch.setattr(sdpa_attention, "repeat_kv", lambda h, n: copies.append(h.shape) or original(h, n))
    grouped = sample_batch(model, tokenizer, rows, config, 0)
    assert len(copies) == 2 * 2  # keys and values of 2 layers, prefill only
    copies.clear()
    plain = sample_batch(model, tokenizer, rows, config, 0, grouped_attention=False)
    assert len(copies) > 2 * 2 * 5  # and at every decode step
    for a, b in zip((s for g in grouped for s in g), (s for g in plain for s in g), strict=True):
        assert a["token_ids"] == b["token_ids"]
        assert torch.allclose(torch.tensor(a["token_logps"]), torch.tensor(b["token_logps"]), atol=2e-6)
