"""``dipo probe``: CLI, AUROC, and the probe's numbers against a direct ``dipo.core`` computation (tiny local model,
the demo's character tokenizer, no hub)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dipo.cli.main import main
from dipo.core import (
    GroupType,
    classify_groups,
    correctness,
    find_threshold,
    judge,
    quadrant_labels,
    reallocate,
    sequence_log_ppl,
)
from dipo.evaluation.metrics import auroc
from dipo.tasks import registry
from dipo.tasks.data import TaskRow

TASK = "probe_test_even_digit"
K = 4


# --- AUROC ---------------------------------------------------------------------------------------------------------
def test_auroc_hand_computed():
    # positives score 0.9, 0.4; negatives 0.5, 0.1: pairs (0.9>0.5) (0.9>0.1) (0.4<0.5) (0.4>0.1) -> 3/4
    assert auroc([0.9, 0.5, 0.4, 0.1], [True, False, True, False]) == pytest.approx(0.75)
    # a tie between a positive and a negative counts one half: pairs 1, 1, 0.5, 1 -> 3.5/4
    assert auroc([0.9, 0.5, 0.5, 0.1], [True, False, True, False]) == pytest.approx(0.875)
    assert auroc([1, 2], [True, False]) == 0.0
    assert auroc([2, 1], [True, False]) == 1.0
    assert math.isnan(auroc([1, 2], [True, True]))
    with pytest.raises(ValueError, match="2 scores but 1 labels"):
        auroc([1, 2], [True])
    with pytest.raises(ValueError, match="NaN score"):
        auroc([1, math.nan], [True, False])


def test_auroc_matches_brute_force():
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (40,), generator=gen).tolist()
    labels = (torch.rand(40, generator=gen) < 0.4).tolist()
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    brute = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))
    assert auroc(scores, labels) == pytest.approx(brute)


# --- CLI ----------------------------------------------------------------------------------------------------------
def test_probe_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["probe", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--task" in out and "--resume" in out and "--overwrite" in out and "--merge" in out


# --- a tiny model, the demo tokenizer and a task with mixed rewards ---------------------------------------------
@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from dipo.demo.model import ModelSpec, build_model
    from dipo.demo.tokenizer import build_tokenizer

    path = tmp_path_factory.mktemp("tiny_probe_model")
    tokenizer = build_tokenizer()
    spec = ModelSpec(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    model = build_model(spec, tokenizer, seed=0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _low_nll_reward(model_dir):
    """A verifier that a tiny random model passes about half the time, and not independently of perplexity: a
    response is "correct" iff its mean NLL under the model (without EOS) is below ln(17) ≈ 2.83 (uniform guessing)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def reward(prompts, completions, completion_ids=None, **columns):
        out = []
        for prompt, completion in zip(prompts, completions, strict=True):
            p, c = tokenizer(prompt)["input_ids"], tokenizer(completion)["input_ids"]
            if not c:
                out.append(0.0)
                continue
            with torch.no_grad():
                logits = model(torch.tensor([p + c])).logits[0, len(p) - 1 : -1]
            nll = -torch.log_softmax(logits, -1).gather(-1, torch.tensor(c)[:, None]).mean()
            out.append(1.0 if float(nll) < math.log(17) else 0.0)
        return out

    return reward


@pytest.fixture(scope="module", autouse=True)
def mixed_task(tiny_model_dir):
    """The demo's arithmetic prompts with a reward a random model gets right about half of the time."""
    from dipo.tasks.arithmetic import ArithmeticTask

    registry.get_task("arithmetic")  # load the built-ins first, so that they are restored with the rest
    saved = dict(registry._TASKS)

    @registry.register_task(TASK, reward=lambda: _low_nll_reward(tiny_model_dir), defaults=registry.TaskDefaults(
        k=K, max_new_tokens=5, chat_template=False))  # fmt: skip
    def load(*, dataset=None, split="heldout", limit=None, offset=0, seed=0, **options):
        items = ArithmeticTask(levels=(1, 2)).sample(offset + (limit or 8), seed=seed, split="heldout")
        rows = [TaskRow(it.prompt, it.answer, f"t-{i}", "test") for i, it in enumerate(items)]
        return rows[offset : None if limit is None else offset + limit]

    yield
    registry._TASKS.clear()
    registry._TASKS.update(saved)


def _probe(model_dir, out, *extra):
    argv = ["probe", "--model", str(model_dir), "--task", TASK, "--limit", "12", "--batch_size", "3",
            "--threads", "1", "--no_progress", "--batch_prompts", "2", "--output_dir", str(out), *extra]  # fmt: skip
    return main(argv)


@pytest.fixture(scope="module")
def probe_dir(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("probe") / "run"
    assert _probe(tiny_model_dir, out, "--truncated", "include") == 0
    return out


def _records(path):
    return [json.loads(line) for line in (path / "samples.jsonl").read_text().splitlines()]


def test_probe_writes_its_outputs(probe_dir):
    for name in ("meta.json", "samples.jsonl", "probe.json", "probe.md", "ppl_hist.png", "ppl_hist_by_length.png"):
        assert (probe_dir / name).exists(), name
    meta = json.loads((probe_dir / "meta.json").read_text())
    assert meta["sampling"]["k"] == K and meta["chat_template_used"] is False
    assert "tempered" in meta["logprobs"]
    assert len(_records(probe_dir)) == 12 * K
    assert "AUROC of PPL for correctness" in (probe_dir / "probe.md").read_text()


def test_stored_logprobs_are_the_tempered_policy_of_a_fresh_forward_pass(probe_dir, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = {r.id: r for r in registry.get_task(TASK).load(limit=12)}
    for record in _records(probe_dir)[:16]:
        prompt_ids = tokenizer(rows[record["id"]].prompt)["input_ids"]
        ids = torch.tensor([prompt_ids + record["token_ids"]])
        with torch.no_grad():
            logits = model(ids).logits[0, len(prompt_ids) - 1 : -1]
        expected = torch.log_softmax(logits / 1.0, -1).gather(-1, torch.tensor(record["token_ids"])[:, None])[:, 0]
        assert torch.allclose(torch.tensor(record["token_logps"]), expected, atol=1e-4)


def _direct(records, truncated="include"):
    """Every quantity computed directly with dipo.core from the stored samples."""
    by_id: dict[str, list] = {}
    for r in records:
        by_id.setdefault(r["id"], []).append(r)
    flat = [r for group in by_id.values() for r in sorted(group, key=lambda r: r["sample"])]
    width = max(len(r["token_logps"]) for r in flat)
    logps = torch.zeros(len(flat), width, dtype=torch.float64)
    mask = torch.zeros_like(logps)
    for i, r in enumerate(flat):
        if truncated == "include" or not r["truncated"]:
            logps[i, : len(r["token_logps"])] = torch.tensor(r["token_logps"], dtype=torch.float64)
            mask[i, : len(r["token_logps"])] = 1
    s = sequence_log_ppl(logps, mask)
    rewards = torch.tensor([r["reward"] for r in flat], dtype=torch.float64)
    valid = torch.ones(len(flat), dtype=torch.bool)
    c = correctness(rewards, valid)
    tau = find_threshold(s, c)
    return s, rewards, c, tau


def test_probe_numbers_equal_a_direct_dipo_core_computation(probe_dir):
    result = json.loads((probe_dir / "probe.json").read_text())["result"]
    s, rewards, c, tau = _direct(_records(probe_dir))
    assert 0 < result["accuracy"] < 1, "the test task must give mixed rewards"
    assert result["accuracy"] == pytest.approx(float(c.double().mean()))
    assert result["threshold_log_ppl"] == pytest.approx(tau)
    j = judge(s, c, tau, 0.95)
    assert result["judgment"]["passed"] == j.passed
    assert result["judgment"]["delta_eis"] == pytest.approx(j.delta_eis)
    assert result["judgment"]["delta_ers"] == pytest.approx(j.delta_ers)
    assert result["judgment"]["low_interval"] == pytest.approx(list(j.low_interval))
    assert result["judgment"]["n_low"] == j.n_low
    keep = ~torch.isnan(s)
    assert result["auroc"] == pytest.approx(auroc((-s[keep]).tolist(), c[keep].tolist()))
    q = quadrant_labels(s, c, tau)
    for name, index in (("CL", 0), ("CH", 1), ("EL", 2), ("EH", 3)):
        assert result["quadrants"][name] == pytest.approx(float((q[q >= 0] == index).double().mean()))
    types = classify_groups(rewards, torch.ones_like(c), K)
    assert result["groups"]["num_hard"] == int((types == GroupType.HARD).sum())
    assert result["groups"]["num_easy"] == int((types == GroupType.EASY).sum())
    for membership in ("selected", "all", "mean"):
        realloc = reallocate(rewards, s, K, tau, membership)
        assert result["reallocation"][membership]["hard"] == int(realloc.hard.sum())
        assert result["reallocation"][membership]["easy"] == int(realloc.easy.sum())
    assert result["batches"]["num_steps"] == 6


def test_truncated_responses_are_excluded_by_default(probe_dir):
    from dipo.probe import AnalysisConfig, analyse

    records = _records(probe_dir)
    result = analyse(records, AnalysisConfig(truncated="exclude"))
    truncated = sum(r["truncated"] for r in records)
    assert result["frac_with_ppl"] == pytest.approx(1 - truncated / len(records))
    if "threshold_log_ppl" in result and result["threshold_log_ppl"] is not None:
        _, _, _, tau = _direct(records, truncated="exclude")
        assert result["threshold_log_ppl"] == pytest.approx(tau)
    from dipo.probe.report import markdown

    assert "Truncated responses: excluded from the PPL analysis." in markdown(result, {})
    included = markdown(analyse(records, AnalysisConfig(truncated="include")), {})
    assert "Truncated responses: included in the PPL analysis." in included


def test_refuses_to_overwrite_and_overwrites_when_asked(probe_dir, tiny_model_dir, capsys):
    before = (probe_dir / "samples.jsonl").read_text()
    assert _probe(tiny_model_dir, probe_dir) == 2
    assert "already holds a probe" in capsys.readouterr().err
    assert (probe_dir / "samples.jsonl").read_text() == before
    assert _probe(tiny_model_dir, probe_dir, "--overwrite", "--resume") == 2
    assert "not both" in capsys.readouterr().err


def test_resume_reproduces_an_uninterrupted_run(tiny_model_dir, tmp_path, capsys):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert _probe(tiny_model_dir, full) == 0
    assert _probe(tiny_model_dir, cut) == 0
    lines = (cut / "samples.jsonl").read_text().splitlines()
    (cut / "samples.jsonl").write_text("\n".join(lines[: 5 * K + 2]) + "\n{broken")  # interrupted mid-write
    assert _probe(tiny_model_dir, cut, "--resume") == 0
    key = lambda r: (r["id"], r["sample"])  # noqa: E731
    assert sorted(_records(cut), key=key) == sorted(_records(full), key=key)
    assert _probe(tiny_model_dir, cut, "--resume", "--max_new_tokens", "3") == 2
    assert "other settings" in capsys.readouterr().err


def test_shards_merge_into_the_full_probe(tiny_model_dir, tmp_path):
    a, b, merged, full = (tmp_path / n for n in ("a", "b", "merged", "full"))
    assert _probe(tiny_model_dir, full) == 0
    assert main(["probe", "--model", str(tiny_model_dir), "--task", TASK, "--limit", "6", "--no_progress",
                 "--batch_size", "3", "--output_dir", str(a)]) == 0  # fmt: skip
    assert main(["probe", "--model", str(tiny_model_dir), "--task", TASK, "--limit", "6", "--offset", "6",
                 "--no_progress", "--batch_size", "3", "--output_dir", str(b)]) == 0  # fmt: skip
    assert main(["probe", "--merge", str(a), str(b), "--output_dir", str(merged)]) == 0
    result = json.loads((merged / "probe.json").read_text())["result"]
    assert result["num_prompts"] == 12
    assert (
        json.loads((merged / "meta.json").read_text())["sample_dtype"]
        == json.loads((a / "meta.json").read_text())["sample_dtype"]
    )
    meta_b = json.loads((b / "meta.json").read_text())  # a shard sampled on another machine says so when merged
    (b / "meta.json").write_text(json.dumps({**meta_b, "sample_dtype": "other"}))
    assert main(["probe", "--merge", str(a), str(b), "--output_dir", str(tmp_path / "mixed")]) == 0
    assert json.loads((tmp_path / "mixed" / "meta.json").read_text())["sample_dtype"].startswith("mixed across")
    assert main(["probe", "--merge", str(a), str(a), "--output_dir", str(tmp_path / "bad")]) == 2


def test_unknown_task_is_a_clear_error(tiny_model_dir, tmp_path, capsys):
    assert main(["probe", "--model", str(tiny_model_dir), "--task", "nope", "--output_dir", str(tmp_path)]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err


def test_builtin_arithmetic_task_runs_on_the_demo_model(tiny_model_dir, tmp_path):
    out = tmp_path / "arith"
    assert main(["probe", "--model", str(tiny_model_dir), "--task", "arithmetic", "--limit", "4", "-k", "2",
                 "--no_progress", "--output_dir", str(out)]) == 0  # fmt: skip
    meta = json.loads((out / "meta.json").read_text())
    assert meta["task"] == "arithmetic" and meta["chat_template_used"] is False


def test_length_bins_give_responses_at_the_limit_their_own_bin():
    from dipo.probe.analysis import length_edges

    assert length_edges(torch.tensor([1, 2, 3, 4, 5, 6]), 3) == [2, 4, 6]
    assert length_edges(torch.tensor([1, 2, 3, 16, 16, 16, 16, 16]), 3) == [2, 3, 16]
    assert length_edges(torch.tensor([16, 16]), 3) == [16]


# --- issue 16: the validation standard of dipo eval, damaged files, unfinished shards -----------------------------
@pytest.fixture
def no_model_load(monkeypatch):
    """Loading a model fails the test: every refusal below must come before it."""
    import dipo.evaluation.generation as generation

    def load_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr(generation, "load_model", load_model)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("dipo ")]
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("-k", "0", "must be >= 2, got 0"),
        ("-k", "1", "must be >= 2, got 1"),
        ("--max_new_tokens", "0", "must be >= 1, got 0"),
        ("--threads", "0", "must be >= 1, got 0"),
        ("--threads", "-1", "must be >= 1, got -1"),
        ("--judgment_confidence", "1.5", "must be 0 or in (0, 1), got 1.5"),
        ("--judgment_confidence", "-0.1", "must be 0 or in (0, 1), got -0.1"),
        ("--temperature", "0", "must be > 0, got 0.0"),
        ("--top_p", "0", "must be in (0, 1], got 0.0"),
        ("--limit", "0", "must be >= 1, got 0"),
        ("--offset", "-1", "must be >= 0, got -1"),
        ("--batch_size", "0", "must be >= 1, got 0"),
        ("--length_bins", "0", "must be >= 1, got 0"),
        ("--batch_prompts", "-1", "must be >= 0, got -1"),
    ],
)
def test_probe_refuses_what_eval_refuses(tiny_model_dir, tmp_path, capsys, no_model_load, option, value, message):
    """Regression (issue 16): -k 0 and --max_new_tokens 0 were replaced by defaults, --threads 0 ignored, --threads -1
    a traceback, --judgment_confidence checked after sampling. Now argparse refuses them as dipo eval does."""
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        _probe(tiny_model_dir, out, option, value)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument" in err and option in err and message in err and "Traceback" not in err
    assert not out.exists()


def test_probe_model_and_output_dir_errors_are_one_line(tiny_model_dir, tmp_path, capsys, monkeypatch, no_model_load):
    """Regression (issue 16): a missing or empty model folder and a read-only output folder gave tracebacks or
    misleading messages; an existing probe was refused only after the model was loaded."""
    out = tmp_path / "out"
    assert _probe("./no/such/dir", out) == 2
    assert "model folder './no/such/dir' does not exist" in _one_error_line(capsys)
    (tmp_path / "empty").mkdir()
    assert _probe(tmp_path / "empty", out) == 2
    assert "empty' holds no model (no config.json)" in _one_error_line(capsys)
    assert not out.exists()
    out.mkdir()
    (out / "samples.jsonl").write_text("kept\n")
    assert _probe(tiny_model_dir, out) == 2  # refused before the model is loaded (no_model_load)
    assert "already holds a probe" in _one_error_line(capsys)
    import tempfile

    def read_only(*args, dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", str(Path(dir) / "tmpXYZ"))

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)  # tests run as root: chmod would not stop a write
    assert _probe(tiny_model_dir, tmp_path / "ro") == 2
    assert "ro' is not writable (permission denied:" in _one_error_line(capsys)
    assert (out / "samples.jsonl").read_text() == "kept\n"


DAMAGED_LINES = {
    "no id": (b'{"sample": 0}', "line 3 is not a probe sample (no id, reward"),
    "not an object": (b"[1, 2]", "line 3 is not a probe sample (a JSON list, not an object)"),
    "bad sample index": (None, "line 3 is not a probe sample (sample 9 is not an index below k=4)"),
    "not UTF-8": (b'{"id": "t-0", "x": "\xff"}', "line 3: byte 0xff at column 21 is not UTF-8 text"),
    "nested 100,000 deep": (b'{"id": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "line 3: a value nested too deeply"),
    "broken JSON": (b"{oops", "line 3: not valid JSON"),
}


@pytest.fixture(scope="module")
def finished_shard(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "a"
    assert _probe(tiny_model_dir, out, "--limit", "6") == 0
    return out


@pytest.mark.parametrize("case", DAMAGED_LINES.keys())
def test_resume_names_the_damaged_line(finished_shard, tiny_model_dir, tmp_path, capsys, no_model_load, case):
    """Regression (issue 16): a damaged samples.jsonl on --resume gave "dipo probe: id" or a traceback. Only a cut
    last line (an interrupted write, no line end) is dropped silently; anything else names the file and line."""
    import shutil

    out = tmp_path / "cut"
    shutil.copytree(finished_shard, out)
    lines = (out / "samples.jsonl").read_bytes().splitlines()
    line, message = DAMAGED_LINES[case]
    if line is None:
        line = json.dumps({**json.loads(lines[2]), "sample": 9}).encode()
    damaged = b"\n".join([*lines[:2], line, *lines[2:]]) + b"\n"
    (out / "samples.jsonl").write_bytes(damaged)
    assert _probe(tiny_model_dir, out, "--limit", "6", "--resume") == 2
    err = _one_error_line(capsys)
    assert f"{out / 'samples.jsonl'}: {message}" in err and "--overwrite" in err, err
    assert len(err) < 600  # the line is not echoed
    assert (out / "samples.jsonl").read_bytes() == damaged  # nothing lost


def test_merge_refuses_a_shard_that_did_not_finish(finished_shard, tiny_model_dir, tmp_path, capsys, monkeypatch):
    """Regression (issue 16): --merge took whatever an interrupted shard held. A shard is finished when its meta.json
    says so (written last) and it holds every prompt it sampled."""
    import dipo.probe as probe

    b = tmp_path / "b"
    calls = []
    score = probe._score

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) > 3:  # during the second batch of 3 prompts
            raise KeyboardInterrupt
        return score(*args, **kwargs)

    monkeypatch.setattr(probe, "_score", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _probe(tiny_model_dir, b, "--limit", "6", "--offset", "6")
    monkeypatch.setattr(probe, "_score", score)
    merged = tmp_path / "merged"
    assert main(["probe", "--merge", str(finished_shard), str(b), "--output_dir", str(merged)]) == 2
    assert f"probe shard '{b}' did not finish (3 of 6 prompts sampled); finish it with dipo probe --resume" in (
        _one_error_line(capsys)
    )
    assert not merged.exists()
    assert _probe(tiny_model_dir, b, "--limit", "6", "--offset", "6", "--resume") == 0
    lines = (b / "samples.jsonl").read_text().splitlines()
    (b / "samples.jsonl").write_text("\n".join(lines[:-K]) + "\n")  # a finished shard that lost a prompt
    assert main(["probe", "--merge", str(finished_shard), str(b), "--output_dir", str(merged)]) == 2
    assert "holds 5 complete prompts of the 6 it sampled" in _one_error_line(capsys)
    (b / "samples.jsonl").write_text("\n".join(lines) + "\n")
    assert main(["probe", "--merge", str(finished_shard), str(b), "--output_dir", str(merged)]) == 0
    assert json.loads((merged / "meta.json").read_text())["complete"] is True
    assert json.loads((merged / "probe.json").read_text())["result"]["num_prompts"] == 12
