"""``dipo probe`` sampling paths: a bf16 copy draws the tokens, the fp32 policy scores them (teacher-forced)."""

from __future__ import annotations

import pytest
import torch

from dipo.evaluation import decoding
from dipo.evaluation.generation import SamplingConfig
from dipo.probe import sampling
from dipo.probe.sampling import rescore, resolve_sample_dtype, sample_batch, sampling_model
from dipo.tasks.data import TaskRow
from dipo.testing import build_tiny_model, build_tokenizer

TEMPERATURE = 0.7


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    model = build_tiny_model(seed=3, vocab_size=32, hidden_size=32, num_layers=2).eval()
    return model, build_tokenizer()


def _rows():
    # Prompts of different lengths, so that the batch is left-padded.
    return [TaskRow(p, "", f"r{i}", "test") for i, p in enumerate(["what is 1 + 2", "3", "what is 4"])]


def _direct_logps(model, tokenizer, prompt: str, token_ids: list[int]) -> torch.Tensor:
    """fp32 log softmax(logits / T) of the response tokens: one unpadded sequence, no batching, no cache."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + token_ids])).logits[0, len(prompt_ids) - 1 : -1]
    logps = torch.log_softmax(logits.double() / TEMPERATURE, -1)
    return logps.gather(-1, torch.tensor(token_ids)[:, None])[:, 0]


def test_sampling_model_is_a_bf16_copy_with_tied_weights(policy):
    model, _ = policy
    sampler = sampling_model(model, "bf16")
    assert sampler is not model and next(model.parameters()).dtype == torch.float32
    assert {p.dtype for p in sampler.parameters()} == {torch.bfloat16}
    assert sampler.lm_head.weight is sampler.model.embed_tokens.weight  # tied as in the policy
    assert torch.equal(sampler.model.embed_tokens.weight, model.model.embed_tokens.weight.to(torch.bfloat16))
    assert sampling_model(model, "fp32") is model
    with pytest.raises(ValueError, match="sample_dtype must be one of auto, bf16, fp32"):
        sampling_model(model, "int8")


def test_bf16_sampling_reports_the_fp32_policy_log_ppl(policy):
    """The recomputed per-token log-probs, hence the log-PPL, equal a direct fp32 teacher-forced computation."""
    model, tokenizer = policy
    config = SamplingConfig(k=4, max_new_tokens=6, temperature=TEMPERATURE, top_p=1.0, batch_size=3)
    rows = _rows()
    samples = sample_batch(model, tokenizer, rows, config, 0, sampling_model(model, "bf16"))
    lengths = set()
    for row, group in zip(rows, samples, strict=True):
        for sample in group:
            direct = _direct_logps(model, tokenizer, row.prompt, sample["token_ids"])
            stored = torch.tensor(sample["token_logps"], dtype=torch.float64)
            assert torch.allclose(stored, direct, atol=2e-5), (stored, direct)
            assert abs(float(stored.mean()) - float(direct.mean())) < 2e-5  # log-PPL = -mean log-prob
            lengths.add(sample["num_tokens"])
    assert len(lengths) > 1, "responses of several lengths (EOS inside the batch) make the check meaningful"


def test_bf16_logits_alone_would_not_be_the_policy(policy):
    """The rescoring matters: bf16 log-probs of the same tokens differ from the fp32 policy's (so the test above can
    fail), while the fp32 rescoring of fp32 samples agrees with generate's own logits."""
    model, tokenizer = policy
    config = SamplingConfig(k=4, max_new_tokens=6, temperature=TEMPERATURE, top_p=1.0, batch_size=3)
    rows = _rows()
    sampler = sampling_model(model, "bf16")
    enc = tokenizer([r.prompt for r in rows], return_tensors="pt", padding=True)
    ids, mask = (enc[key].repeat_interleave(config.k, 0) for key in ("input_ids", "attention_mask"))
    samples = sample_batch(model, tokenizer, rows, config, 0)  # fp32 sampling, generate's logits
    width = max(s["num_tokens"] for g in samples for s in g)
    completion = torch.tensor([s["token_ids"] + [0] * (width - s["num_tokens"]) for g in samples for s in g])
    fp32 = rescore(model, ids, mask, completion, TEMPERATURE)
    bf16 = rescore(sampler, ids, mask, completion, TEMPERATURE)
    stored = [s["token_logps"] for g in samples for s in g]
    for i, logps in enumerate(stored):
        assert torch.allclose(fp32[i, : len(logps)].double(), torch.tensor(logps, dtype=torch.float64), atol=2e-5)
    assert (bf16 - fp32).abs().max() > 1e-3


def test_auto_samples_with_the_policys_own_dtype(policy):
    """bf16 + rescoring ran slower than fp32 on short answers even with native bf16: ``auto`` copies nothing."""
    model, _ = policy
    assert resolve_sample_dtype("auto", model) == "fp32" and sampling_model(model, "auto") is model
    assert resolve_sample_dtype("auto", sampling_model(model, "bf16")) == "bf16"  # a bf16 policy samples itself
    assert resolve_sample_dtype("bf16", model) == "bf16" and resolve_sample_dtype("fp32", model) == "fp32"


def test_probe_cli_bf16_sampling_stores_the_fp32_policy_logprobs(tmp_path, capsys):
    """``dipo probe --sample_dtype bf16`` end to end: meta says bf16, stored log-probs are the fp32 model's."""
    import json

    from dipo.cli.main import main
    from dipo.evaluation.generation import load_model
    from dipo.tasks import registry
    from dipo.testing import build_tiny_model_dir

    model_dir = build_tiny_model_dir(tmp_path / "model", seed=1, hidden_size=32)
    out = tmp_path / "probe"
    argv = ["probe", "--model", str(model_dir), "--task", "arithmetic", "--limit", "3", "-k", "4", "--threads", "1",
            "--temperature", str(TEMPERATURE), "--no_progress", "--output_dir", str(out)]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--sample_dtype", "fp16"])
    assert exit_info.value.code == 2 and "invalid choice: 'fp16'" in capsys.readouterr().err
    assert not out.exists()
    argv += ["--sample_dtype", "bf16"]
    assert main(argv) == 0
    assert json.loads((out / "meta.json").read_text())["sample_dtype"] == "bf16"
    model, tokenizer = load_model(str(model_dir), "float32", "cpu")  # as the probe loads them
    prompts = {r.id: r.prompt for r in registry.get_task("arithmetic").load(limit=3)}
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(records) == 12
    for record in records:
        direct = _direct_logps(model, tokenizer, prompts[record["id"]], record["token_ids"])
        assert torch.allclose(torch.tensor(record["token_logps"], dtype=torch.float64), direct, atol=2e-5)
    assert "tokens drawn with bf16 weights" in (out / "probe.md").read_text()

    # A resume that would draw with other weights than the probe started with is refused, naming the fix.
    lines = (out / "samples.jsonl").read_text().splitlines()
    (out / "samples.jsonl").write_text("\n".join(lines[:4]) + "\n")
    before = (out / "samples.jsonl").read_text()
    assert main([*argv[:-2], "--sample_dtype", "fp32", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "drawn with bf16 weights" in err and "--sample_dtype bf16" in err
    assert (out / "samples.jsonl").read_text() == before  # nothing lost
    assert main([*argv, "--resume"]) == 0
    assert len((out / "samples.jsonl").read_text().splitlines()) == 12


@pytest.mark.parametrize(("temperature", "top_p"), [(TEMPERATURE, 1.0), (1.0, 1.0), (1.3, 0.8)])
def test_recorded_logprobs_match_generate_logits_with_the_same_tokens(policy, temperature, top_p):
    """fp32 sampling through ``generate`` records the log-probs step by step (no vocabulary-sized logits kept for the
    whole response): the drawn tokens are exactly those of ``generate``'s own warpers with ``output_logits=True``, and
    the log-probs are ``log softmax(logits / T)`` of those raw logits, untruncated by top-p. (The pruned loop, the
    default, is checked against this path in ``tests/test_decoding.py``.)"""
    model, tokenizer = policy
    config = SamplingConfig(k=4, max_new_tokens=6, temperature=temperature, top_p=top_p, batch_size=3)
    rows = _rows()
    samples = sample_batch(model, tokenizer, rows, config, 5, prune_finished=False)
    enc = tokenizer([r.prompt for r in rows], return_tensors="pt", padding=True)
    torch.manual_seed(config.seed + 5)
    reference = model.generate(
        **enc, max_new_tokens=6, do_sample=True, temperature=temperature, top_p=top_p, top_k=0, num_return_sequences=4,
        eos_token_id=sampling.eos_ids(model, tokenizer), pad_token_id=tokenizer.pad_token_id,
        return_dict_in_generate=True, output_logits=True,
    )  # fmt: skip
    completion = reference.sequences[:, enc["input_ids"].shape[1] :]
    logps = torch.log_softmax(torch.stack(reference.logits, dim=1).double() / temperature, dim=-1)
    expected = logps.gather(-1, completion[:, : logps.shape[1]].unsqueeze(-1)).squeeze(-1)
    flat = [s for group in samples for s in group]
    assert len({s["num_tokens"] for s in flat}) > 1
    for i, sample in enumerate(flat):
        n = sample["num_tokens"]
        assert sample["token_ids"] == completion[i, :n].tolist()
        assert torch.allclose(torch.tensor(sample["token_logps"], dtype=torch.float64), expected[i, :n], atol=2e-6)


def test_recorder_keeps_one_step_of_logits_and_gathers_the_last_token():
    """Hand-made steps: each step's distribution is dropped once the next call shows the token drawn from it."""
    recorder = decoding.SampledTokenLogps(temperature=2.0)
    scores = [torch.tensor([[0.0, 2.0, 4.0]]), torch.tensor([[4.0, 0.0, 0.0]])]
    ids = torch.tensor([[7, 2]])  # prompt token 7, then token 2 drawn at step 1
    assert torch.equal(recorder(ids[:, :1], scores[0].clone()), scores[0] / 2)
    recorder(ids, scores[1].clone())
    assert len(recorder._logps) == 1 and recorder._pending is not None  # step 2's distribution only
    logps = recorder.token_logps(torch.tensor([[7, 2, 0]]))  # token 0 drawn at step 2
    expected = [torch.log_softmax(scores[0] / 2, -1)[0, 2], torch.log_softmax(scores[1] / 2, -1)[0, 0]]
    assert torch.allclose(logps, torch.stack(expected)[None])


def test_each_prompt_is_prefilled_once_for_its_k_samples(policy):
    """On the ``generate`` path, the k samples share one prefill of their prompt: the model sees B prompts once, then
    one token per sample per step (generate alone would prefill B·k copies); the cache equals a per-copy prefill up to
    float rounding. (The pruned loop's prefill: ``tests/test_decoding.py``.)"""
    model, tokenizer = policy
    config = SamplingConfig(k=4, max_new_tokens=3, temperature=TEMPERATURE, top_p=1.0, batch_size=3)
    rows = _rows()
    widths: list[tuple[int, int]] = []
    hook = model.register_forward_pre_hook(
        lambda _m, _a, kw: widths.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    try:
        sample_batch(model, tokenizer, rows, config, 0, prune_finished=False)
    finally:
        hook.remove()
    prompt = tokenizer([r.prompt for r in rows], return_tensors="pt", padding=True)["input_ids"]
    assert widths[0] == (3, prompt.shape[1] - 1)  # the shared prefill: B rows
    assert all(shape == (12, 1) for shape in widths[1:])  # B·k rows, one new token each

    enc = tokenizer([r.prompt for r in rows], return_tensors="pt", padding=True)
    cache = decoding.shared_prompt_cache(model, enc["input_ids"], enc["attention_mask"], 4)
    ids, mask = (enc[key].repeat_interleave(4, 0) for key in ("input_ids", "attention_mask"))
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        full = model(
            input_ids=ids[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1], use_cache=True
        )
    for layer, reference in zip(cache.layers, full.past_key_values.layers, strict=True):
        assert layer.keys.shape == reference.keys.shape
        assert torch.allclose(layer.keys, reference.keys, atol=1e-5)
        assert torch.allclose(layer.values, reference.values, atol=1e-5)
    assert decoding.shared_prompt_cache(model, enc["input_ids"], enc["attention_mask"], 1) is None
    assert decoding.shared_prompt_cache(model, enc["input_ids"][:, -1:], enc["attention_mask"][:, -1:], 4) is None


def test_a_repetition_penalty_in_the_generation_config_is_overridden(policy):
    """Instruct checkpoints often ship ``repetition_penalty`` > 1 (Qwen2.5-Instruct: 1.05–1.1); TRL samples with 1.0,
    and so does the probe: the samples and log-probs are those of a model without it."""
    model, tokenizer = policy
    config = SamplingConfig(k=4, max_new_tokens=6, temperature=TEMPERATURE, top_p=1.0, batch_size=3)
    plain = sample_batch(model, tokenizer, _rows(), config, 2)
    original = model.generation_config.repetition_penalty
    model.generation_config.repetition_penalty = 3.0
    try:
        penalised = sample_batch(model, tokenizer, _rows(), config, 2)
    finally:
        model.generation_config.repetition_penalty = original
    assert [s["token_ids"] for g in penalised for s in g] == [s["token_ids"] for g in plain for s in g]
    assert [s["token_logps"] for g in penalised for s in g] == [s["token_logps"] for g in plain for s in g]
