"""One builder of small random decoders (:func:`dipo.tiny_model.build_decoder`) serves the tests, the demo and the GPU
benchmark (issue 17, item 5)."""

from __future__ import annotations

import pytest
import torch

from dipo.tiny_model import build_decoder

SIZES = {
    "vocab_size": 32,
    "hidden_size": 16,
    "intermediate_size": 32,
    "num_layers": 1,
    "num_heads": 2,
    "num_kv_heads": 1,
    "max_positions": 64,
    "pad_token_id": 0,
    "eos_token_id": 1,
}


def test_build_decoder_is_seeded_and_isolates_the_global_rng_on_request():
    torch.manual_seed(7)
    before = torch.get_rng_state()
    a = build_decoder("qwen2", **SIZES, seed=3)
    assert torch.equal(torch.get_rng_state(), before)  # isolate_rng=True: the caller's RNG untouched
    b = build_decoder("qwen2", **SIZES, seed=3, isolate_rng=False)
    assert not torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert a.config.tie_word_embeddings and a.config.bos_token_id is None
    assert (a.generation_config.pad_token_id, a.generation_config.eos_token_id) == (0, 1)


def test_the_tests_and_the_demos_builders_go_through_build_decoder(monkeypatch):
    import dipo.demo.model
    import dipo.testing
    import dipo.tiny_model
    from dipo.demo.model import ModelSpec, build_model
    from dipo.demo.tokenizer import build_tokenizer
    from dipo.testing import build_tiny_model

    archs = []
    real = dipo.tiny_model.build_decoder

    def spy(arch, **kwargs):
        archs.append(arch)
        return real(arch, **kwargs)

    assert dipo.demo.model.build_decoder is real and dipo.testing.build_decoder is real
    monkeypatch.setattr(dipo.tiny_model, "build_decoder", spy)
    monkeypatch.setattr(dipo.demo.model, "build_decoder", spy)
    monkeypatch.setattr(dipo.testing, "build_decoder", spy)
    build_tiny_model()
    build_model(ModelSpec(hidden_size=16, intermediate_size=32, num_hidden_layers=1), build_tokenizer(), seed=0)
    assert archs == ["qwen2", "llama"]
    with pytest.raises(ValueError, match="unknown arch='gpt2'"):
        real("gpt2", **SIZES, seed=0)


def test_one_word_tokenizer_serves_the_tests_and_the_benchmark(monkeypatch):
    import dipo.testing
    import dipo.tiny_model
    from dipo.benchmarking.policy import build_word_tokenizer as benchmark_tokenizer
    from dipo.testing import VOCAB, build_tokenizer

    calls = []
    real = dipo.tiny_model.build_word_tokenizer

    def spy(words, unk_token):
        calls.append((len(words), unk_token))
        return real(words, unk_token)

    monkeypatch.setattr(dipo.tiny_model, "build_word_tokenizer", spy)
    monkeypatch.setattr(dipo.testing, "build_word_tokenizer", spy)
    tests_tok, bench_tok = build_tokenizer(), benchmark_tokenizer(40)
    assert calls == [(len(VOCAB), "<unk>"), (40, "<pad>")]
    ids = tests_tok("easy what is 7 zzz").input_ids
    assert ids == [VOCAB.index(w) for w in ("easy", "what", "is", "7", "<unk>")]
    assert tests_tok.decode(ids[:4]) == "easy what is 7"
    assert bench_tok("w2 w39 nope").input_ids == [2, 39, 0] and len(bench_tok) == 40
    for tok in (tests_tok, bench_tok):
        assert (tok.pad_token_id, tok.eos_token_id, tok.padding_side) == (0, 1, "left")


def test_tiny_model_dir_with_and_without_a_chat_template(tmp_path):
    from dipo.testing import CHAT_TEMPLATE, build_tiny_model_dir, load_tiny

    _, plain = load_tiny(build_tiny_model_dir(tmp_path / "plain"))
    model, chat = load_tiny(build_tiny_model_dir(tmp_path / "chat", chat_template=CHAT_TEMPLATE))
    assert plain.chat_template is None and chat.chat_template == CHAT_TEMPLATE
    assert chat.apply_chat_template([{"role": "user", "content": "what is 7"}], tokenize=False) == "what is 7 "
    assert model.config.vocab_size == 32
