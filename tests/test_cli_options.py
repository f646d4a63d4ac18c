"""One option spelling across the CLI: underscores (as dipo train's TrlParser), hyphens a deprecated alias."""

from __future__ import annotations

import argparse
import warnings

import pytest

from dipo.cli import options
from dipo.cli.options import add_option, underscore_spelling


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_option(p, "--prompt_field", default="prompt")
    add_option(p, "-k", "--num-samples", type=int, default=None)  # either spelling may be declared
    add_option(p, "--skip_broken_rows", action="store_true")
    add_option(p, "--seed", type=int, default=0)
    return p


def test_underscore_spelling():
    assert underscore_spelling("--prompt-field") == "--prompt_field"
    assert underscore_spelling("-k") == "-k" and underscore_spelling("--seed") == "--seed"


def test_underscores_parse_without_warning(monkeypatch):
    monkeypatch.setattr(options, "_WARNED", set())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        args = parser().parse_args(["--prompt_field", "q", "--num_samples", "3", "--skip_broken_rows", "--seed", "2"])
    assert (args.prompt_field, args.num_samples, args.skip_broken_rows, args.seed) == ("q", 3, True, 2)
    assert parser().parse_args(["-k", "5"]).num_samples == 5


def test_hyphens_still_work_and_warn_once(monkeypatch):
    monkeypatch.setattr(options, "_WARNED", set())
    with pytest.warns(FutureWarning, match="--prompt-field is deprecated.*use --prompt_field"):
        args = parser().parse_args(["--prompt-field", "q", "--skip-broken-rows"])
    assert args.prompt_field == "q" and args.skip_broken_rows is True
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # second use in the same process: no second warning
        assert parser().parse_args(["--prompt-field", "p"]).prompt_field == "p"


def test_dipo_eval_accepts_both_spellings(monkeypatch):
    from dipo.cli.main import build_parser

    monkeypatch.setattr(options, "_WARNED", set())
    argv = ["eval", "--prompt_field", "problem", "--max_new_tokens", "3", "--output_dir", "o"]
    new = build_parser().parse_args(argv)
    with pytest.warns(FutureWarning):
        old = build_parser().parse_args(
            ["eval", "--prompt-field", "problem", "--max-new-tokens", "3", "--output-dir", "o"]
        )
    for name in ("prompt_field", "max_new_tokens", "output_dir"):
        assert getattr(new, name) == getattr(old, name)
