"""``scripts/atlas_rl_report.py`` on hand-made run files: the registered paired differences, by prompt and by seed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from script_helpers import load_script


@pytest.fixture(scope="module")
def report():
    return load_script("scripts/atlas_rl_report.py")


def _run(correct: list[int], realloc_easy: float = 0.0, before: bool = False) -> dict:
    k = 8
    after = {"mean@8": 100 * sum(correct) / (k * len(correct)), "pass@8": 100.0, "correct_per_prompt": correct}
    step = {"step": 1, "reward": 0.5, "dipo/frac_hard": 0.5, "dipo/frac_easy": 0.0, "dipo/realloc_hard": 0.0,
            "dipo/realloc_easy": realloc_easy, "entropy": 0.4, "completions/mean_length": 3.0}  # fmt: skip
    run = {"settings": {"per_device_train_batch_size": 16, "num_generations": 8}, "log_history": [step],
           "heldout_after": after, "train_seconds": 1.0, "total_seconds": 2.0}  # fmt: skip
    if before:
        run["heldout_before"] = {"mean@8": 25.0, "pass@8": 50.0}
    return run


def _write(root: Path, name: str, run: dict) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "real_rl.json").write_text(json.dumps(run))


def test_paired_differences_by_prompt_and_by_seed(report, tmp_path):
    _write(tmp_path, "dapo-s0", _run([0, 4, 8], before=True))
    _write(tmp_path, "dipo-s0", _run([2, 4, 8], realloc_easy=2))
    _write(tmp_path, "dapo-s1", _run([0, 0, 8]))
    _write(tmp_path, "dipo-s1", _run([0, 2, 8], realloc_easy=1))
    _write(tmp_path, "not-a-run", _run([8, 8, 8]))
    result = report.analyse(report.load_runs(tmp_path))
    c = result["comparisons"]["dipo − dapo"]
    # per prompt, averaged over both seeds: (2 + 0)/16, (0 + 2)/16, 0 -> 12.5, 12.5, 0 points
    assert c["by_prompt"]["seeds"] == [0, 1] and c["by_prompt"]["diff"] == pytest.approx(25 / 3)
    sd = math.sqrt(((12.5 - 25 / 3) ** 2 * 2 + (25 / 3) ** 2) / 2)
    assert c["by_prompt"]["ci95"] == pytest.approx(4.303 * sd / math.sqrt(3))
    # per seed: mean@8 differences 2/24 and 2/24 -> 8.33 points each, zero spread
    assert (
        c["by_seed"]["n"] == 2
        and c["by_seed"]["diff"] == pytest.approx(25 / 3)
        and c["by_seed"]["ci95"] == pytest.approx(0, abs=1e-9)
    )
    assert result["runs"]["dipo"][0]["realloc_easy"] == 2 and result["runs"]["dipo"][0]["extreme_groups"] == 1
    assert result["base"]["mean@8"] == 25.0
    assert result["comparisons"]["dipo − dipo-random"]["by_prompt"]["seeds"] == []
    text = report.markdown(result)
    assert "8.3 ± " in text and "Base model (before RL): held-out mean@8 25.0 %" in text


def test_cli_refuses_an_empty_root(report, tmp_path):
    with pytest.raises(SystemExit) as err:
        report.main(["--root", str(tmp_path), "--out", str(tmp_path / "out")])
    assert err.value.code == 2 and not (tmp_path / "out").exists()


def test_cli_keeps_an_earlier_report_without_overwrite(report, tmp_path):
    _write(tmp_path / "runs", "dapo-s0", _run([0, 4, 8], before=True))
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("earlier")
    with pytest.raises(SystemExit) as err:
        report.main(["--root", str(tmp_path / "runs"), "--out", str(out)])
    assert err.value.code == 2 and (out / "report.md").read_text() == "earlier"
    assert report.main(["--root", str(tmp_path / "runs"), "--out", str(out), "--overwrite"]) == 0
    assert "Base model" in (out / "report.md").read_text()
