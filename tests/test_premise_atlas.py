"""``scripts/premise_atlas.py`` without a model: the plan, resumable running, the report on a fake output folder."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from dipo.probe import read_samples
from script_helpers import load_script

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "premise_atlas.py"


@pytest.fixture(scope="module")
def atlas():
    return load_script(SCRIPT)


def test_plan_covers_the_preregistered_cells(atlas):
    cells = atlas.cells()
    short = [c for c in cells if c.task != "math"]
    assert len(short) == 4 * len(atlas.SHORT_TASKS) and len(atlas.SHORT_TASKS) >= 6
    assert {c.task for c in short} >= {"nl_arithmetic", "reasoning_gym", "decimal_compare", "letter_count"}
    assert len({c.dataset for c in short if c.task == "reasoning_gym"}) >= 3
    for c in short:  # >= 128 prompts for the two small models, >= 64 for the others, k = 8
        assert c.k == 8 and c.limit >= (128 if atlas.MODELS[c.model].params < 3e8 else 64)
    cot = [c for c in cells if c.task == "math"]
    assert {(c.model, c.dataset) for c in cot} == {
        ("qwen2.5-coder-0.5b", "gsm8k"),
        ("qwen2.5-coder-0.5b", "math_train:level1-2"),
    }
    assert all(c.max_new_tokens >= 256 for c in cot)
    assert len({c.out_dir(Path("r")) for c in cells}) == len(cells)  # one folder per cell


def test_command_is_the_exact_probe_call(atlas, tmp_path):
    cell = atlas.Cell("smollm2-135m", "decimal_compare", "trap,control", 128, 64)
    cmd = atlas.command(cell, tmp_path, ["dipo"], ["--sample_dtype", "bf16"])
    assert cmd[:2] == ["dipo", "probe"]
    pairs = {flag: cmd[cmd.index(flag) + 1] for flag in ("--model", "--dataset", "--limit", "--max_new_tokens", "-k",
                                                           "--output_dir")}  # fmt: skip
    assert pairs["--model"] == "smollm2-135m-instruct" and pairs["--dataset"] == "trap,control"
    assert pairs["--limit"] == "128" and pairs["--max_new_tokens"] == "64" and pairs["-k"] == "8"
    assert pairs["--output_dir"] == str(tmp_path / "smollm2-135m" / "decimal_compare-trap+control")
    assert cmd[-2:] == ["--sample_dtype", "bf16"] and "--resume" not in cmd
    assert atlas.command(cell, tmp_path, ["dipo"], [], resume=True)[-1] == "--resume"
    math_cell = atlas.Cell("qwen2.5-coder-0.5b", "math", "math_train:level1-2", 64, 512)
    assert "--split" not in atlas.command(math_cell, tmp_path, ["dipo"], [])


def test_select_and_unknown_model(atlas):
    cells = atlas.cells()
    picked = atlas.select(cells, "smollm2-135m", "letter_count,nl_arithmetic-add1")
    assert [(c.model, c.name) for c in picked] == [
        ("smollm2-135m", "nl_arithmetic-add1"),
        ("smollm2-135m", "letter_count-repeat+single"),
    ]
    with pytest.raises(SystemExit, match="unknown model"):
        atlas.select(cells, "gpt-2", None)


def test_run_is_resumable_and_skips_finished_cells(atlas, tmp_path, capsys):
    done, partial, todo = (
        atlas.Cell("smollm2-135m", "letter_count", d, 8, 16) for d in ("repeat", "single", "absent")
    )
    (done.out_dir(tmp_path)).mkdir(parents=True)
    (done.out_dir(tmp_path) / "probe.json").write_text("{}")
    partial.out_dir(tmp_path).mkdir(parents=True)
    (partial.out_dir(tmp_path) / "meta.json").write_text("{}")
    assert [atlas.state(c, tmp_path) for c in (done, partial, todo)] == ["done", "partial", "todo"]
    fake_dipo = [sys.executable, "-c", "import sys; sys.exit(sys.argv[-1] == '--' + 'resume' and 3)"]  # fails resumed
    failed = atlas.run_cells([done, partial, todo], tmp_path, fake_dipo, [])
    out = capsys.readouterr().out
    assert failed == 1  # the partial cell was continued with --resume (the fake fails there)
    assert "[done] smollm2-135m/letter_count-repeat" in out
    lines = out.splitlines()
    assert out.count("[run]") == 2 and lines[1].endswith("--resume") and not lines[3].endswith("--resume")
    assert "[ok] smollm2-135m/letter_count-absent" in out


def _records(rewards_and_ppl, k):
    """Probe samples: one (reward, ppl) list per prompt."""
    out = []
    for i, group in enumerate(rewards_and_ppl):
        for j, (reward, ppl) in enumerate(group):
            out.append({"id": f"p{i}", "sample": j, "reward": reward, "token_logps": [-math.log(ppl)] * 2,
                        "num_tokens": 2, "truncated": False})  # fmt: skip
    assert all(len(g) == k for g in rewards_and_ppl)
    return out


def _write_cell(root, cell, records, result):
    out = cell.out_dir(root)
    out.mkdir(parents=True)
    (out / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    meta = {"sampling": {"max_new_tokens": cell.max_new_tokens}, "wall_seconds": 12.0}
    (out / "probe.json").write_text(json.dumps({"meta": meta, "result": result}))


def test_reach_hand_computed(atlas):
    block = {
        "groups": {"num_hard": 6, "num_easy": 2},
        "reallocation": {"selected": {"hard_if_judged": 1, "easy_if_judged": 1}},
        "batches": {"selected": {"frac_of_extreme": 0.125}},
    }
    assert atlas.reach(block) == {"pooled": 0.25, "replay": 0.125}  # (1 + 1) / (6 + 2)
    assert atlas.reach({"groups": {"num_hard": 0, "num_easy": 0}}) == {"pooled": None, "replay": None}


def test_replay_edges_hand_computed(atlas, tmp_path):
    # step 1 (8 prompts, all right): τ* above all responses -> edge; step 2 (queue = both batches): right answers at
    # PPL 1.1-1.2, wrong at 5 -> a finite cut. One edge in two steps.
    step1 = [[(1.0, 1.1), (1.0, 1.2)]] * 8
    step2 = [[(1.0, 1.1), (0.0, 5.0)]] * 8
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _records(step1 + step2, 2)))
    records = read_samples(path, 2)
    assert atlas.replay_edges(records, batch_prompts=8) == 0.5
    assert atlas.replay_edges(records, batch_prompts=16) == 0.0  # one step: the queue holds both kinds
    assert atlas.replay_edges(records, batch_prompts=32) is None  # no full step


def test_report_on_a_fake_output_folder(atlas, tmp_path):
    from dipo.probe.analysis import analyse

    cells = [atlas.Cell(m, "letter_count", "repeat,single", 8, 16) for m in ("smollm2-135m", "qwen2.5-coder-0.5b")]
    # k = 4. Mixed groups: right at PPL 2.0 / 2.1, wrong at 7.0 / 7.5. Weak model: its all-wrong groups ramble (PPL
    # 8-9, above τ*). Strong model: confidently wrong all-wrong groups (PPL 1.3-1.45, below τ* ≈ between 2.1 and 7)
    # and easy groups at low PPL (no high-PPL right answer to penalise).
    mixed = [(1.0, 2.0), (1.0, 2.1), (0.0, 7.0), (0.0, 7.5)]
    weak_hard = [(0.0, 8.0), (0.0, 8.5), (0.0, 9.0), (0.0, 8.2)]
    hard = [(0.0, 1.3), (0.0, 1.35), (0.0, 1.4), (0.0, 1.45)]
    easy = [(1.0, 1.1), (1.0, 1.15), (1.0, 1.2), (1.0, 1.25)]
    weak = [weak_hard, mixed, mixed, mixed, mixed] * 4
    strong = [hard, mixed, mixed, mixed, easy] * 4  # 4 hard, 12 mixed, 4 easy groups
    for cell, groups in zip(cells, (weak, strong), strict=True):
        records = _records(groups, 4)
        _write_cell(tmp_path, cell, records, analyse(records))
    gemma = atlas.Cell("gemma-3-270m", "letter_count", "repeat,single", 8, 16)  # every response truncated
    _write_cell(tmp_path, gemma, [], {"num_prompts": 8, "k": 8, "error": "no response has a PPL"})
    out = atlas.report(tmp_path, [*cells, gemma, atlas.Cell("gemma-3-270m", "letter_count", "absent", 8, 16)])
    rows = {r["model"]: r for r in out["rows"]}
    assert rows["smollm2-135m"]["reach"]["selected"]["replay"] == 0.0  # 4 hard groups, all above τ*
    assert rows["smollm2-135m"]["easy"] == 0.0 and rows["smollm2-135m"]["hard"] == 0.2
    strong_row = rows["qwen2.5-coder-0.5b"]
    assert strong_row["reach"]["selected"]["pooled"] == 0.5  # 4 confident hard groups of 8 extreme ones
    # replay, 8 prompts per step (2 steps, 16 prompts): step 1 holds 2 hard + 1 easy, step 2 2 hard + 2 easy groups.
    # Step 1: Pr(c=1 | s < τ*) = 14/22, Wilson 95 % lower bound 0.43 < 0.5 -> the judgment fails, nothing moves; step 2
    # (queue of both batches, 28/46 below τ*, bound 0.51) passes and reallocates its 2 hard groups: 2 of 7
    assert strong_row["reach"]["selected"]["replay"] == pytest.approx(2 / 7)
    assert strong_row["replay_edge"] == 0.0 and strong_row["judged"]
    assert out["missing"] == ["gemma-3-270m/letter_count-absent"]
    assert rows["gemma-3-270m"]["error"] == "no response has a PPL"
    assert out["hits"] == ["qwen2.5-coder-0.5b/letter_count-repeat+single"]
    text = (tmp_path / "atlas.md").read_text()
    assert text.count("| letter_count-repeat+single |") == 3 and "Not finished (1)" in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 5 and {line.count("|") for line in table} == {len(atlas.HEADER) + 1}
    assert "not measurable: no response has a PPL" in text
    assert json.loads((tmp_path / "atlas.json").read_text())["missing"] == out["missing"]
    assert (tmp_path / "atlas_reach.png").exists()


def test_report_reads_the_balanced_threshold_block(atlas, tmp_path):
    """With the class-balanced τ* block of the probe (``result["balanced"]``), the row carries its reach beside the
    paper's; its replay edge count needs ``DiPOCoreConfig.threshold_rule`` (None without it)."""
    import dataclasses

    from dipo.core import DiPOCoreConfig
    from dipo.probe.analysis import analyse

    cell = atlas.Cell("qwen2.5-coder-1.5b", "decimal_compare", "trap,control", 8, 16)
    records = _records([[(0.0, 1.3), (0.0, 1.4)], [(1.0, 2.0), (0.0, 7.0)]] * 8, 2)
    result = analyse(records)
    result["balanced"] = {
        "threshold_ppl": None,
        "threshold_at_edge": "below_all",
        "judgment": {"passed": True},
        "reallocation": {"selected": {"hard_if_judged": 2, "easy_if_judged": 0}},
        "batches": {"selected": {"frac_of_extreme": 0.25}},
    }
    _write_cell(tmp_path, cell, records, result)
    row = atlas.cell_summary(cell, tmp_path)
    assert row["balanced"]["reach"]["selected"] == {"pooled": 2 / 8, "replay": 0.25}  # 8 hard groups, none easy
    has_rule = "threshold_rule" in {f.name for f in dataclasses.fields(DiPOCoreConfig)}
    assert (row["balanced"]["replay_edge"] is None) != has_rule
    assert "pass; 25.0 %; 25.0 %" in atlas.markdown_table([row])


def test_included_reanalyses_only_finished_cells(atlas, tmp_path, capsys):
    done, todo = (atlas.Cell("gemma-3-270m", "letter_count", d, 8, 16) for d in ("repeat", "single"))
    done.out_dir(tmp_path).mkdir(parents=True)
    (done.out_dir(tmp_path) / "probe.json").write_text("{}")
    assert atlas.run_included([done, todo], tmp_path, [sys.executable, "-c", "pass"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "--merge" in lines[0] and "--truncated include" in lines[0]
    assert lines[0].endswith(str(tmp_path / "gemma-3-270m" / "letter_count-repeat-incl"))


def test_replay_edges_survive_without_the_samples(atlas, tmp_path):
    """The committed copy of a cell leaves ``samples.jsonl`` out; its replay edge shares come from the
    ``replay_edges.json`` written when the samples were there, and only for the same batch size."""
    from dipo.probe.analysis import analyse

    cell = atlas.Cell("gemma-3-270m", "letter_count", "single", 8, 16)
    records = _records([[(0.0, 8.0), (0.0, 9.0)]] * 8 + [[(1.0, 2.0), (0.0, 7.0)]] * 8, 2)
    _write_cell(tmp_path, cell, records, analyse(records))
    first = atlas.cell_summary(cell, tmp_path)
    (cell.out_dir(tmp_path) / "samples.jsonl").unlink()
    again = atlas.cell_summary(cell, tmp_path)
    assert first["replay_edge"] == again["replay_edge"] == 0.5  # step 1 (all wrong): no cut; step 2 has one
    assert atlas.cell_replay_edges(cell.out_dir(tmp_path), batch_prompts=16, k=2) == {"paper": None, "balanced": None}
    (cell.out_dir(tmp_path) / "replay_edges.json").unlink()
    assert atlas.cell_summary(cell, tmp_path)["replay_edge"] is None


def test_report_adds_the_truncated_included_reanalysis(atlas, tmp_path):
    """``<cell>-incl`` (the probe re-run with ``--truncated include``) is reported as a second table, and its replay
    keeps the truncated responses: a first step of truncated all-wrong groups has no PPL when they are excluded (no
    edge: NaN) and a τ* at an edge when they are included."""
    from dipo.probe.analysis import AnalysisConfig, analyse

    cell = atlas.Cell("gemma-3-270m", "nl_arithmetic", "add1", 16, 16)
    records = _records([[(0.0, 9.0), (0.0, 9.5)]] * 8 + [[(1.0, 2.0), (0.0, 7.0)]] * 8, 2)
    for r in records[:16]:
        r["truncated"] = True
    _write_cell(tmp_path, cell, records, analyse(records, AnalysisConfig(truncated="exclude")))
    incl = atlas.Cell(cell.model, cell.task, cell.dataset + "-incl", 16, 16)  # the "<cell>-incl" folder
    _write_cell(tmp_path, incl, records, analyse(records, AnalysisConfig(truncated="include")))
    out = atlas.report(tmp_path, [cell])
    assert [r["cell"] for r in out["rows"]] == ["nl_arithmetic-add1"]
    assert [r["cell"] for r in out["included"]] == ["nl_arithmetic-add1-incl"]
    assert out["rows"][0]["replay_edge"] == 0.0 and out["included"][0]["replay_edge"] == 0.5
    assert out["rows"][0]["truncated"] == out["included"][0]["truncated"] == 0.5
    text = (tmp_path / "atlas.md").read_text()
    assert "truncated responses included" in text and "| nl_arithmetic-add1-incl |" in text
    assert json.loads((tmp_path / "atlas.json").read_text())["included"][0]["cell"] == "nl_arithmetic-add1-incl"
