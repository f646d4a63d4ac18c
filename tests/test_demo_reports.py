"""Tests of the generic report helpers: spreads over seeds, paired differences, series and plots."""

from __future__ import annotations

import math

import pytest

from dipo.reports.plots import plot_metric, plot_panels, series, smooth
from dipo.reports.summary import markdown_table, paired_difference, spread, t95


def test_spread_hand_computed():
    s = spread([0.1, 0.2, 0.3])
    assert s.mean == pytest.approx(0.2)
    assert s.std == pytest.approx(0.1)
    assert s.ci95 == pytest.approx(4.303 * 0.1 / math.sqrt(3))
    assert s.fmt() == "20.0 ± 10.0"
    assert spread([0.5]).fmt() == "50.0"
    assert spread([math.nan]).fmt() == "n/a"
    assert math.isnan(t95(0)) and t95(100) == 1.96


def test_paired_difference_removes_shared_seed_noise():
    a = {0: 0.50, 1: 0.70, 2: 0.30}
    b = {0: 0.40, 1: 0.60, 2: 0.20, 3: 0.99}  # seed 3 unpaired: ignored
    d = paired_difference(a, b)
    assert d.n == 3
    assert d.mean == pytest.approx(0.1)
    assert d.std == pytest.approx(0.0, abs=1e-12)


def test_series_mean_and_std_over_histories_skip_missing_and_nan():
    h1 = [{"step": 1, "x": 1.0}, {"step": 2, "x": 3.0}, {"step": 3, "y": 5.0}]
    h2 = [{"step": 1, "x": 3.0}, {"step": 2, "x": math.nan}]
    steps, mean, std = series([h1, h2], "x")
    assert steps.tolist() == [1.0, 2.0]
    assert mean.tolist() == [2.0, 3.0]
    assert std[0] == pytest.approx(math.sqrt(2.0)) and std[1] == 0.0
    assert smooth(mean, 2).tolist() == [2.0, 2.5]


def test_plots_write_png_and_skip_missing_metrics(tmp_path):
    runs = {"a": [[{"step": i, "m": i * 0.1, "n": 1.0} for i in range(5)]] * 2}
    assert plot_metric(runs, "m", tmp_path / "m.png").stat().st_size > 1000
    assert plot_metric(runs, "absent", tmp_path / "absent.png") is None
    assert plot_panels(runs, ["m", "n"], tmp_path / "p.png", "two").stat().st_size > 1000


def test_markdown_table():
    assert markdown_table(["a", "b"], [["1", "2"]]) == "| a | b |\n|---|---|\n| 1 | 2 |"


def test_demo_report_moved_next_to_the_demo_and_the_old_path_warns():
    """``dipo.reports`` no longer imports ``dipo.demo`` (the report lives in ``dipo.demo.report``); the old import
    path still works and warns (once per process: on its first import)."""
    import importlib
    import sys
    import warnings
    from pathlib import Path

    import dipo.demo.report as report
    import dipo.reports

    for path in Path(dipo.reports.__file__).parent.glob("*.py"):
        assert "dipo.demo" not in path.read_text().replace("dipo.demo.report", ""), path
    sys.modules.pop("dipo.reports.demo_report", None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = importlib.import_module("dipo.reports.demo_report")
    assert [w.category for w in caught] == [DeprecationWarning]
    assert all(getattr(old, name) is getattr(report, name) for name in report.__all__)
