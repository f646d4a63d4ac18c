"""Tests of the embedded demo: tokenizer, model, warm start (cache, determinism, mixed accuracy), evaluation,
the CDE-style arms (the trainer's option), and ``dipo demo --quick`` end to end."""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest
import torch

from dipo.demo.model import ModelSpec, build_model, num_parameters
from dipo.demo.tokenizer import build_tokenizer
from dipo.demo.warmstart import SFTConfig, load_or_train_warmstart, sft_batch, warmstart_key
from dipo.tasks.arithmetic import ArithmeticTask

TASK = ArithmeticTask(ops=("+",))
SPEC = ModelSpec(num_hidden_layers=2)


def test_tokenizer_roundtrip_and_left_padding():
    tok = build_tokenizer()
    assert len(tok) == 17
    assert tok.decode(tok(" 12")["input_ids"]) == " 12"
    ids = tok("12+345=")["input_ids"]
    assert len(ids) == 7
    assert tok.decode(ids) == "12+345="
    assert (
        tok.decode([*tok("987")["input_ids"], tok.eos_token_id, tok.pad_token_id], skip_special_tokens=True) == "987"
    )
    batch = tok(["1+2=", "10+20="], padding=True)
    assert batch["attention_mask"][0][:2] == [0, 0]  # left padding for generation


def test_model_is_small_and_deterministic():
    tok = build_tokenizer()
    a, b = build_model(SPEC, tok, seed=3), build_model(SPEC, tok, seed=3)
    assert num_parameters(a) < 500_000
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    c = build_model(SPEC, tok, seed=4)
    assert not torch.equal(next(a.parameters()), next(c.parameters()))
    with pytest.raises(ValueError, match="divisible"):
        build_model(ModelSpec(hidden_size=66, num_attention_heads=4), tok, seed=0)


def test_sft_batch_masks_prompt_tokens():
    tok = build_tokenizer()
    items = TASK.sample(4, seed=0)
    _ids, mask, labels = sft_batch(items, tok)
    for row, it in enumerate(items):
        n_answer = len(it.answer) + 1  # + eos
        assert int((labels[row] != -100).sum()) == n_answer
        assert labels[row, -1] == tok.eos_token_id
        assert int(mask[row].sum()) == len(it.prompt) + n_answer
    _, _, filled = sft_batch(items, tok, fillers=[True, False, False, False])
    space = tok(" ")["input_ids"][0]
    first_label = filled[0][filled[0] != -100][0]
    assert first_label == space  # the filler is supervised; the verifier accepts both forms
    assert int((filled[0] != -100).sum()) == len(items[0].answer) + 2


def test_warmstart_key_changes_with_every_input():
    base = warmstart_key(TASK, SPEC, SFTConfig())
    assert base == warmstart_key(TASK, SPEC, SFTConfig())
    assert base != warmstart_key(TASK, SPEC, SFTConfig(steps=10))
    assert base != warmstart_key(TASK, replace(SPEC, hidden_size=32), SFTConfig())
    assert base != warmstart_key(ArithmeticTask(), SPEC, SFTConfig())


def test_warmstart_is_deterministic_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("DIPO_CACHE", str(tmp_path / "a"))
    sft = SFTConfig(steps=15, batch_size=16)
    path_a, info_a = load_or_train_warmstart(TASK, SPEC, sft)
    assert not info_a["cached"]
    start = time.perf_counter()
    path_again, info_again = load_or_train_warmstart(TASK, SPEC, sft)
    assert info_again["cached"] and path_again == path_a
    assert time.perf_counter() - start < 1.0
    monkeypatch.setenv("DIPO_CACHE", str(tmp_path / "b"))
    path_b, _ = load_or_train_warmstart(TASK, SPEC, sft)
    from safetensors.torch import load_file

    wa, wb = load_file(path_a / "model.safetensors"), load_file(path_b / "model.safetensors")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def _former_demo_loop(model, tok, prompts, k, seed, rows, max_new_tokens=6):
    """The demo's own generation loop before it went through dipo.evaluation (the reference for its published
    numbers): greedy, or each prompt repeated k times in item order, one seed, ``rows`` sequences per call."""
    flat = prompts if k == 0 else [p for p in prompts for _ in range(k)]
    out = []
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for start in range(0, len(flat), rows):
            enc = tok(flat[start : start + rows], return_tensors="pt", padding=True)
            sample = {"temperature": 1.0, "top_k": 0, "top_p": 1.0} if k else {}
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=k > 0, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id, **sample)  # fmt: skip
            out += tok.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return out


def test_demo_evaluation_goes_through_dipo_evaluation_with_the_former_draws(monkeypatch):
    """The demo's held-out evaluation samples through dipo.evaluation.generate (item order, one seed, ≤ ROWS_PER_CALL
    rows per call, forked RNG) and gives the former loop's draws; its metrics equal a count by hand."""
    import dipo.demo.evaluate as demo_eval
    from dipo.evaluation import generation

    calls = []

    def spy(model, tokenizer, prompts, config, progress=None, **options):
        gens = generation.generate(model, tokenizer, prompts, config, progress, **options)
        calls.append((config, options, [text for texts in gens.texts for text in texts]))
        return gens

    monkeypatch.setattr(demo_eval, "generate", spy)
    monkeypatch.setattr(demo_eval, "ROWS_PER_CALL", 8)  # several calls: the seed must run on through them
    tok = build_tokenizer()
    model = build_model(ModelSpec(16, 32, 1, 2, 32), tok, seed=0)
    items = ArithmeticTask(levels=(2, 1), ops=("+", "*")).heldout_set(6, seed=1)
    prompts = [it.prompt for it in items]
    assert [len(p) for p in prompts] != sorted(len(p) for p in prompts)  # sorting by length would change batches
    k, seed = 4, 5
    greedy = _former_demo_loop(model, tok, prompts, 0, 0, 8)
    sampled = _former_demo_loop(model, tok, prompts, k, seed, 8)
    # answers chosen so that some greedy and some sampled completions are correct and some are not
    answers = [greedy[i] if i % 3 == 0 else sampled[i * k + i % k] if i % 3 == 1 else it.answer
               for i, it in enumerate(items)]  # fmt: skip
    items = [replace(it, answer=a.strip()) for it, a in zip(items, answers, strict=True)]
    model.train()
    state = torch.get_rng_state()

    result = demo_eval.evaluate(model, tok, items, k=k, max_new_tokens=6, seed=seed)

    assert model.training and torch.equal(torch.get_rng_state(), state)
    assert [texts for *_, texts in calls] == [greedy, sampled]  # the former draws, bit for bit
    ok = [[sampled[i * k + j].strip() == it.answer for j in range(k)] for i, it in enumerate(items)]
    hits = [sum(row) for row in ok]
    greedy_ok = [g.strip() == it.answer for g, it in zip(greedy, items, strict=True)]
    assert 0 < sum(greedy_ok) < len(items) and 0 < sum(hits) < k * len(items) and min(hits) == 0
    assert result.item_hits == hits
    assert result.greedy == sum(greedy_ok) / len(items)
    assert result.mean_at_k == sum(hits) / (k * len(items))
    assert result.pass_at_k == sum(h > 0 for h in hits) / len(items)
    assert result.filler_rate == sum(s.startswith(" ") for s in sampled) / len(sampled)
    for level in (1, 2):
        at = [i for i, it in enumerate(items) if it.level == level]
        assert result.greedy_by_level[level] == sum(greedy_ok[i] for i in at) / len(at)
        assert result.mean_at_k_by_level[level] == sum(hits[i] for i in at) / (k * len(at))
        assert result.pass_at_k_by_level[level] == sum(hits[i] > 0 for i in at) / len(at)
    settings = [(c.k, c.temperature, c.top_p, c.batch_size, c.seed) for c, *_ in calls]
    assert settings == [(1, 0, 1.0, 8, 0), (k, 1.0, 1.0, 2, seed)]  # greedy, then k samples (8 // k prompts per call)
    plain = {
        "order": "input",
        "seeding": "once",
        "prune_finished": False,
        "share_prompt": False,
        "grouped_attention": False,
    }
    assert all(options == plain for _, options, _ in calls)


def test_cde_methods_use_the_trainers_ppl_bonus_option(tmp_path):
    """The CDE-style arms are the trainer's ``ppl_bonus_coef`` / ``ppl_bonus_clip`` (the bonus itself is tested with
    the trainer, tests/test_trl_trainer.py::test_cde_style_ppl_bonus_baseline, and in tests/test_core_baselines.py)."""
    from dipo import DiPOConfig
    from dipo.demo.methods import REGISTRY

    for name, coef in (("dapo-cde0.1", 0.1), ("dapo-cde0.3", 0.3)):
        method = REGISTRY[name]
        assert method.overrides == {"ppl_bonus_coef": coef, "ppl_bonus_clip": 0.5}
        args = DiPOConfig(
            output_dir=str(tmp_path),
            preset=method.preset,
            use_cpu=True,
            bf16=False,
            report_to="none",
            **method.overrides,
        )
        assert (args.ppl_bonus_coef, args.ppl_bonus_clip) == (coef, 0.5)
        assert args.needs_ppl and not args.dipo_enabled  # DAPO + the bonus; DiPO itself off


def test_quick_demo_end_to_end(tmp_path, monkeypatch):
    """`dipo demo --quick` trains the warm start, runs GRPO/DAPO/DiPO and writes the report with all three."""
    from dipo.cli.main import main

    monkeypatch.setenv("DIPO_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    start = time.perf_counter()
    assert main(["demo", "--quick", "--no-progress", "--out", str(out)]) == 0
    seconds = time.perf_counter() - start
    report = (out / "report.md").read_text()
    results = json.loads((out / "results.json").read_text())
    for method in ("grpo", "dapo", "dipo"):
        assert f"| {method} |" in report
    assert {r["method"] for r in results["runs"]} == {"grpo", "dapo", "dipo"}
    for run in results["runs"]:
        assert len(run["history"]) == results["config"]["steps"]
        assert 0.0 <= run["final"]["mean_at_k"] <= 1.0
        assert run["evals"][0]["step"] == 0.0
    dipo_run = next(r for r in results["runs"] if r["method"] == "dipo")
    assert any("dipo/frac_easy" in row for row in dipo_run["history"])
    for name in ("accuracy.png", "entropy.png", "groups.png"):
        assert (out / "plots" / name).stat().st_size > 1000
    assert "![" in report
    print(f"quick demo: {seconds:.1f} s")

    # The warm start of the quick demo is mixed: easy levels are answered better than hard ones.
    held = results["warmstart"]["heldout"]["mean_at_k_by_level"]
    top = max(held, key=int)
    assert held["1"] > held[top] + 0.1
    assert held["1"] >= 0.3
    assert held[top] <= 0.5
    # The regime instruments ran: entropy split and shifts per step, pass@k and per-item hits per evaluation.
    assert any("demo/surface_entropy" in row for row in dipo_run["history"])
    assert "item_hits" in dipo_run["evals"][0] and "pass_at_k" in dipo_run["final"]
    assert "## BRR activity" in report and "## Every method vs DAPO" in report
    assert (out / "runs" / "dipo-s0" / "record.json").exists()


def test_demo_config_device_defaults_to_cpu_and_keeps_cpu_run_keys():
    from dipo.demo.runner import DemoConfig

    cfg = DemoConfig()
    assert cfg.device == "cpu"
    assert "device" in cfg.as_dict()
    # the CPU default leaves the run key of earlier records unchanged; another device is another run
    payload = {k: v for k, v in cfg.as_dict().items() if k not in ("methods", "seeds", "workers", "device")}
    import hashlib

    legacy = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
    assert cfg.run_key() == legacy
    assert replace(cfg, device="cuda").run_key() != cfg.run_key()


def test_dynamic_sampling_arms_build_and_run(tmp_path):
    """`dapo-ds` / `dipo-ds` (docs/results/regimes-ds.md) are the trainer's `dynamic_sampling` option on the DAPO /
    DiPO presets, outside every default method set, and run through the demo runner (2 steps, untrained model: every
    group is all-wrong, so the cap may be reached and the batch filled)."""
    from dipo.demo.methods import ABLATIONS, BASELINES, CONTROLS, MAIN, REGISTRY
    from dipo.demo.report import ds_cost_table
    from dipo.demo.runner import DemoConfig, run_one

    defaults = {m.name for m in [*MAIN, *ABLATIONS, *BASELINES]} | set(CONTROLS) | set(DemoConfig().methods)
    assert not {"dapo-ds", "dipo-ds"} & defaults
    assert (REGISTRY["dapo-ds"].preset, REGISTRY["dipo-ds"].preset) == ("dapo", "dipo")
    assert REGISTRY["dipo-ds"].overrides == {"dynamic_sampling": True, "max_generation_rounds": 10}

    tokenizer = build_tokenizer()
    spec = ModelSpec(num_hidden_layers=1)
    warm = tmp_path / "warm"
    build_model(spec, tokenizer, seed=0).save_pretrained(warm)
    tokenizer.save_pretrained(warm)
    cfg = replace(
        DemoConfig.for_regime("explore").quick(),
        model=spec,
        steps=2,
        prompts_per_step=4,
        num_generations=4,
        eval_every=2,
        eval_per_level=2,
        final_eval_per_level=2,
        k=2,
        ppl_window=1,
    )
    runs = []
    for name in ("dapo-ds", "dipo-ds"):
        record = run_one(cfg, REGISTRY[name], 0, str(warm), str(tmp_path / "out"))
        rounds = [row["dipo/ds_rounds"] for row in record["history"]]
        assert len(rounds) == 2 and all(1 <= r <= 10 for r in rounds)
        runs.append(record)
    table = ds_cost_table({"runs": runs, "methods": {"dapo-ds": {}, "dipo-ds": {}}})
    assert "| dapo-ds | 1 |" in table and "| dipo-ds | 1 |" in table


def test_method_registry_refuses_a_name_defined_twice_differently():
    """Issue 17 item 5: ``dipo-a1.0`` once stood in two lists with two descriptions and the registry silently kept
    the last; now one method object may stand in several lists, a second definition is an error."""
    from dipo.demo.methods import ABLATIONS, ALPHA_1, BASELINES, REGISTRY, Method, build_registry

    assert ALPHA_1 in ABLATIONS and ALPHA_1 in BASELINES and REGISTRY["dipo-a1.0"] is ALPHA_1
    assert build_registry([ALPHA_1, ALPHA_1]) == {"dipo-a1.0": ALPHA_1}
    twin = Method("dipo-a1.0", "dipo", {"dipo_alpha": 1.0}, description="another description")
    with pytest.raises(ValueError, match=r"method 'dipo-a1\.0' is defined twice, differently"):
        build_registry([ALPHA_1, twin])
