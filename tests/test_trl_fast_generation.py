"""``DiPOConfig.fast_generation``: static KV cache + compilation on TRL's transformers ``generate`` path.

Checks on CPU with a tiny local model: the config wiring and its errors, that the trainer re-enables compilation
(TRL builds its GenerationConfig with ``disable_compile=True``) and changes nothing else, that sampled completions
(temperature, top-p, EOS truncation) are identical to TRL's default path under the same seed, that the sampler's
log-probs equal a reference forward pass, and that a short training run works.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from trl import GRPOConfig

from dipo.integrations.trl import DiPOConfig, DiPOTrainer
from trl_helpers import build_dataset, build_tiny_model_dir, kind_reward, load_tiny, tiny_grpo_kwargs

# Sampling settings shared by both paths in the semantic checks (top-p and temperature both active).
SAMPLING = dict(temperature=0.7, top_p=0.9, max_completion_length=12)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny_fastgen"), seed=3, hidden_size=32)


def make_trainer(model_dir, tmp_path, fast: bool, **overrides) -> DiPOTrainer:
    model, tokenizer = load_tiny(model_dir)
    settings = tiny_grpo_kwargs(tmp_path / ("fast" if fast else "default"), fast_generation=fast, **overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return DiPOTrainer(
            model=model,
            reward_funcs=[kind_reward],
            args=DiPOConfig(**settings),
            train_dataset=build_dataset(16),
            processing_class=tokenizer,
        )


def prompt_ids(tokenizer) -> list[list[int]]:
    """Prompts of different lengths, each repeated for 4 generations (as TRL does)."""
    texts = ["easy what is the answer 1", "hard 2", "mixed what is 3", "a b c d 4 5 6 7 8"]
    return [ids for ids in tokenizer(texts)["input_ids"] for _ in range(4)]


# ---------------------------------------------------------------------------------------------------- config
def test_config_sets_static_cache_and_bucket(tmp_path):
    args = DiPOConfig(**tiny_grpo_kwargs(tmp_path, fast_generation=True))
    assert args.cache_implementation == "static"
    assert args.pad_to_multiple_of == 64
    args = DiPOConfig(**tiny_grpo_kwargs(tmp_path, fast_generation=True, fast_generation_bucket=16))
    assert args.pad_to_multiple_of == 16
    args = DiPOConfig(**tiny_grpo_kwargs(tmp_path, fast_generation=True, pad_to_multiple_of=32))
    assert args.pad_to_multiple_of == 32  # the user's explicit value wins
    args = DiPOConfig(**tiny_grpo_kwargs(tmp_path))
    assert args.cache_implementation is None and args.pad_to_multiple_of is None  # off by default: TRL unchanged


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="use_vllm"):
        DiPOConfig(**tiny_grpo_kwargs(tmp_path, fast_generation=True, use_vllm=True))
    with pytest.raises(ValueError, match="use_transformers_continuous_batching"):
        DiPOConfig(**tiny_grpo_kwargs(tmp_path, fast_generation=True, use_transformers_continuous_batching=True))
    with pytest.raises(ValueError, match="cache_implementation='static'"):
        DiPOConfig(**tiny_grpo_kwargs(tmp_path, fast_generation=True, cache_implementation="dynamic"))
    with pytest.raises(ValueError, match="cache_implementation='static'"):
        DiPOConfig(
            **tiny_grpo_kwargs(tmp_path, fast_generation=True, generation_kwargs={"cache_implementation": "offloaded"})
        )
    with pytest.raises(ValueError, match="fast_generation_bucket"):
        DiPOConfig(**tiny_grpo_kwargs(tmp_path, fast_generation=True, fast_generation_bucket=0))


def test_from_grpo_config_accepts_fast_generation(tmp_path):
    base = GRPOConfig(**tiny_grpo_kwargs(tmp_path))
    args = DiPOConfig.from_grpo_config(base, fast_generation=True)
    assert args.cache_implementation == "static" and args.pad_to_multiple_of == 64


# ---------------------------------------------------------------------------------------------------- trainer
def test_trainer_enables_compile_and_changes_nothing_else(model_dir, tmp_path):
    default = make_trainer(model_dir, tmp_path, fast=False)
    fast = make_trainer(model_dir, tmp_path, fast=True)
    assert default.generation_config.disable_compile is True  # TRL's own choice
    assert fast.generation_config.disable_compile is False
    a, b = default.generation_config.to_dict(), fast.generation_config.to_dict()
    differing = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    assert differing == {"cache_implementation", "disable_compile"}


def _generate(trainer: DiPOTrainer, ids: list[list[int]], seed: int) -> list[list[int]]:
    trainer.model.eval()
    torch.manual_seed(seed)
    completions, logprobs = trainer._generate_single_turn(ids, None, {}, num_generations=4)
    assert logprobs is None
    return completions


def test_sampled_completions_identical_to_default_path(model_dir, tmp_path):
    """Same seed, same weights: temperature, top-p and EOS truncation give the same completions on both paths,
    although the fast path left-pads prompts to a multiple of the bucket and uses a static cache."""
    overrides = dict(SAMPLING, fast_generation_bucket=16)
    default = make_trainer(model_dir, tmp_path, fast=False, **overrides)
    fast = make_trainer(model_dir, tmp_path, fast=True, **overrides)
    ids = prompt_ids(default.processing_class)
    eos = default.eos_token_ids[0]
    seen_eos = seen_full = False
    for seed in range(3):
        ref, got = _generate(default, ids, seed), _generate(fast, ids, seed)
        assert got == ref
        seen_eos |= any(c and c[-1] == eos for c in ref)
        seen_full |= any(len(c) == SAMPLING["max_completion_length"] and eos not in c for c in ref)
    assert seen_eos and seen_full  # both EOS-terminated and truncated completions were compared


def test_greedy_completions_identical_to_default_path(model_dir, tmp_path):
    overrides = dict(SAMPLING, generation_kwargs={"do_sample": False}, fast_generation_bucket=16)
    default = make_trainer(model_dir, tmp_path, fast=False, **overrides)
    fast = make_trainer(model_dir, tmp_path, fast=True, **overrides)
    ids = prompt_ids(default.processing_class)
    assert _generate(fast, ids, 0) == _generate(default, ids, 0)


def test_sampler_logprobs_match_reference_forward(model_dir, tmp_path):
    """Log-probs of the sampled tokens from the fast path's own logits (static cache, bucketed left padding) equal
    TRL's loss-side log-probs (one full forward pass, temperature applied) on every completion token."""
    fast = make_trainer(model_dir, tmp_path, fast=True, **SAMPLING, fast_generation_bucket=16)
    tok = fast.processing_class
    ids = prompt_ids(tok)
    batch = tok.pad({"input_ids": ids}, pad_to_multiple_of=16, return_tensors="pt")
    assert batch["input_ids"].shape[1] == 16
    fast.model.eval()
    torch.manual_seed(0)
    with torch.no_grad():
        out = fast.model.generate(
            **batch, generation_config=fast.generation_config, output_logits=True, return_dict_in_generate=True
        )
    prompt_len = batch["input_ids"].shape[1]
    completion = out.sequences[:, prompt_len:]
    logits = torch.stack(out.logits, dim=1).float() / SAMPLING["temperature"]
    sampler = torch.log_softmax(logits, dim=-1).gather(-1, completion.unsqueeze(-1)).squeeze(-1)
    is_eos = completion == fast.eos_token_ids[0]
    after_eos = (is_eos.cumsum(dim=1) - is_eos.int()) > 0
    mask = ~after_eos
    with torch.no_grad():
        reference, _, _ = fast._get_per_token_logps_and_entropies(
            fast.model,
            out.sequences,
            torch.cat([batch["attention_mask"], mask.long()], dim=1),
            completion.size(1),
        )
    diff = (sampler - reference).abs()[mask]
    assert mask.sum() > 20
    assert float(diff.max()) < 1e-4


def test_compile_is_used_when_the_device_allows_it(model_dir, tmp_path):
    """transformers compiles only on CUDA/XPU; force its CPU switch (eager backend, no codegen) to check that
    fast_generation really lets generate take the compiled decoding step and the default path does not."""
    from transformers import CompileConfig

    for fast in (False, True):
        trainer = make_trainer(model_dir, tmp_path, fast=fast, max_completion_length=4, fast_generation_bucket=16)
        config = CompileConfig(backend="eager", dynamic=False)
        config._compile_all_devices = True
        trainer.generation_config.compile_config = config
        trainer.generation_kwargs = {**trainer.generation_kwargs, "compile_config": config}
        _generate(trainer, prompt_ids(trainer.processing_class)[:4], 0)
        assert hasattr(trainer.model, "_compiled_call") is fast


@pytest.mark.slow
def test_decoding_step_compiles_once_over_training_steps(model_dir, tmp_path):
    """With TRL's default gradient checkpointing, TRL switches checkpointing off and on around every generation;
    transformers then adds an embedding hook each time, and torch.compile guards on their number. The trainer keeps
    one hook, so the compiled decoding step is reused at every step (eager backend: tracing only, on CPU)."""
    from torch._dynamo.utils import counters
    from transformers import CompileConfig, TrainerCallback

    trainer = make_trainer(
        model_dir, tmp_path, fast=True, max_steps=4, fast_generation_bucket=16, gradient_checkpointing=True
    )
    config = CompileConfig(backend="eager", dynamic=False)
    config._compile_all_devices = True
    trainer.generation_config.compile_config = config
    trainer.generation_kwargs = {**trainer.generation_kwargs, "compile_config": config}
    graphs: list[int] = []
    hooks: list[int] = []

    class Probe(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            graphs.append(counters["stats"]["unique_graphs"])
            hooks.append(len(trainer.model.get_input_embeddings()._forward_hooks))

    trainer.add_callback(Probe())
    trainer.train()
    assert hasattr(trainer.model, "_compiled_call")
    assert graphs[1:] == [graphs[0]] * 3  # no recompilation after the first generation
    assert hooks == [1, 1, 1, 1]


@pytest.mark.slow
def test_short_training_run_with_fast_generation(model_dir, tmp_path):
    trainer = make_trainer(model_dir, tmp_path, fast=True, max_steps=3, num_iterations=2, fast_generation_bucket=16)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
    record = trainer.last_dipo_batch
    assert record is not None and record.ppl_source == "old"  # num_iterations=2: TRL's own log-probs
    assert trainer.args.pad_to_multiple_of == 16
