"""One declaration per DiPO option (issue 17, item 1): the core config, TRL's ``dipo_*`` fields, verl's
``algorithm.dipo.*`` keys and the options tables of the docs all derive from the declarations in ``dipo.core.config``,
and every error names the option as the user spelled it (no rewording of messages)."""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
import typing
from dataclasses import fields
from pathlib import Path

import pytest

from dipo.core import DiPOCoreConfig
from dipo.core.__main__ import main as core_main
from dipo.core.config import CORE_OPTIONS
from dipo.core.options import OPTION_KEY, Option, format_value, markdown_table, option
from dipo.integrations.verl.options import DERIVED_FIELDS, allowed_option_names, parse_dipo_options

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
CPU = {"use_cpu": True, "bf16": False}
VERL_ONLY = ("log_probs", "verifier_key", "loss_agg_mode")


def bad_value(opt: Option) -> object:
    """A value every declaration of this kind refuses."""
    return {bool: "maybe", int: 1.5, float: math.nan, str: "nope"}[opt.kind]


def assert_names_only(message: str, core_name: str, spelled: str) -> None:
    """``message`` names the option as ``spelled`` and never by another spelling of ``core_name``."""
    assert spelled in message, message
    assert not re.search(rf"(?<![\w.]){re.escape(core_name)}\b", message.replace(spelled, "")), message


# ---------------------------------------------------------------- the declaration
def test_every_core_field_is_declared_once_with_its_type_and_a_valid_default():
    hints = typing.get_type_hints(DiPOCoreConfig)
    assert [f.name for f in fields(DiPOCoreConfig)] == list(CORE_OPTIONS)
    for f in fields(DiPOCoreConfig):
        opt = f.metadata[OPTION_KEY]
        assert hints[f.name] == opt.annotation and f.default == opt.default, f.name
        assert opt.help.endswith(".") and opt.spec.startswith("§"), f.name
        assert getattr(DiPOCoreConfig(), f.name) == opt.default
        assert f"{f.name}: {opt.help}" in DiPOCoreConfig.__doc__  # help(DiPOCoreConfig) lists the declarations


def test_a_declaration_refuses_an_invalid_default():
    with pytest.raises(ValueError, match=r"the default must be an int >= 1, got 0"):
        option(0, "§4", "x.", at_least=1)


@pytest.mark.parametrize("name", list(CORE_OPTIONS))
def test_core_errors_name_the_core_option(name):
    with pytest.raises(ValueError) as caught:
        DiPOCoreConfig(**{name: bad_value(CORE_OPTIONS[name])})
    assert_names_only(str(caught.value), name, name)


# ---------------------------------------------------------------- docs
def committed_table() -> str:
    text = (DOCS / "algorithm.md").read_text()
    begin = text.index("-->\n", text.index("<!-- options-table: begin")) + len("-->\n")
    return text[begin : text.index("<!-- options-table: end -->")]


def test_docs_options_table_is_the_generated_one(capsys):
    core_main(["--markdown"])
    generated = capsys.readouterr().out
    assert generated == markdown_table(CORE_OPTIONS)
    assert committed_table() == generated, "run `python -m dipo.core --markdown` and paste it into docs/algorithm.md"


def test_defaults_quoted_in_the_spec_text_are_the_declared_ones():
    quoted = re.findall(r"\[choice: (\w+) = ([^\]]+)\]", (DOCS / "algorithm.md").read_text())
    assert len(quoted) >= 4
    for name, value in quoted:
        assert value == format_value(CORE_OPTIONS[name].default), name


def test_framework_docs_list_exactly_the_options_they_expose():
    from dipo.integrations.trl.config import CORE_OPTION_FIELDS

    trl_row = next(line for line in (DOCS / "trl.md").read_text().splitlines() if "`dipo_queue_batches`, " in line)
    trl_fields = {v for v in CORE_OPTION_FIELDS.values() if v.startswith("dipo_") and v != "dipo_alpha"}
    assert set(re.findall(r"`(dipo_\w+)`", trl_row.split("|")[1])) == trl_fields
    verl_row = next(line for line in (DOCS / "verl.md").read_text().splitlines() if line.startswith("| `alpha`, "))
    assert set(re.findall(r"`(\w+)`", verl_row.split("|")[1])) == set(CORE_OPTIONS) - set(DERIVED_FIELDS)


# ---------------------------------------------------------------- TRL
def test_trl_fields_are_generated_from_the_declarations(tmp_path):
    trl = pytest.importorskip("dipo.integrations.trl.config")
    DiPOConfig = trl.DiPOConfig
    declared = {f.name: f for f in fields(DiPOConfig)}
    hints = typing.get_type_hints(DiPOConfig)
    assert set(trl.CORE_OPTION_FIELDS) | set(trl.TRL_FIXED_OPTIONS) == set(CORE_OPTIONS)
    for name, trl_name in trl.CORE_OPTION_FIELDS.items():
        opt, f = CORE_OPTIONS[name], declared[trl_name]
        if trl_name != f"dipo_{name}":
            assert trl_name in trl.GRPOConfig.__dataclass_fields__  # TRL's own field (seed, scale_rewards)
            continue
        assert opt.help in f.metadata["help"] and opt.spec.replace("**", "") in f.metadata["help"], name
        if name == "alpha":  # None: the preset's value
            assert f.default is None and hints[trl_name] == float | None
            continue
        assert f.default == opt.default and hints[trl_name] == opt.annotation, name
        assert f.metadata.get("choices", []) == list(opt.choices), name
    config = DiPOConfig(output_dir=str(tmp_path), report_to="none", **CPU)
    expected = DiPOCoreConfig(selection_seed=config.seed, **trl.TRL_FIXED_OPTIONS)
    assert config.dipo_core_config() == expected  # every default, dipo_alpha's preset 'dipo' included


def test_trl_help_shows_default_choices_and_help():
    from transformers import HfArgumentParser

    from dipo.integrations.trl import DiPOConfig

    help_text = " ".join(HfArgumentParser(DiPOConfig).format_help().split())
    assert "--dipo_membership {selected,all,mean}" in help_text
    assert "--dipo_threshold_rule {error,balanced}" in help_text
    assert "(default: 1e-06)" in help_text and "Graded extreme-group test" in help_text


@pytest.mark.parametrize("name", [n for n in CORE_OPTIONS if n not in ("scale_rewards", "std", "std_eps")])
def test_trl_errors_name_the_field_as_written(tmp_path, name):
    from dipo.integrations.trl import DiPOConfig
    from dipo.integrations.trl.config import trl_option_name

    spelled = trl_option_name(name)
    with pytest.raises(ValueError) as caught:
        DiPOConfig(output_dir=str(tmp_path), report_to="none", **CPU, **{spelled: bad_value(CORE_OPTIONS[name])})
    message = str(caught.value)
    assert message.startswith("DiPOConfig: ")
    assert_names_only(message, name, spelled)


# ---------------------------------------------------------------- verl
def test_verl_keys_and_defaults_are_the_declarations():
    assert allowed_option_names() == (*(n for n in CORE_OPTIONS if n not in DERIVED_FIELDS), *VERL_ONLY)
    core = parse_dipo_options({}).core
    for name, opt in CORE_OPTIONS.items():
        if name not in DERIVED_FIELDS:
            assert getattr(core, name) == opt.default, name


@pytest.mark.parametrize("name", [n for n in CORE_OPTIONS if n not in DERIVED_FIELDS])
def test_verl_errors_name_the_key_as_written(name):
    with pytest.raises(ValueError) as caught:
        parse_dipo_options({"dipo": {name: bad_value(CORE_OPTIONS[name])}})
    assert_names_only(str(caught.value), name, f"algorithm.dipo.{name}")


def test_verl_switches_accept_true_false_strings_and_refuse_others():
    core = parse_dipo_options({"dipo": {"judgment": "False", "reallocate_easy": "true"}}).core
    assert core.judgment is False and core.reallocate_easy is True
    with pytest.raises(ValueError, match=r"algorithm\.dipo\.judgment must be true or false, got 'no'"):
        parse_dipo_options({"dipo": {"judgment": "no"}})
    with pytest.raises(ValueError, match=r"unknown DiPO option\(s\) algorithm\.dipo\.membershp; valid options: alpha"):
        parse_dipo_options({"dipo": {"membershp": "all"}})


# ---------------------------------------------------------------- one change, everywhere
CHANGED_DEFAULT = """
from dipo.core import DiPOCoreConfig
from dipo.core.config import CORE_OPTIONS
from dipo.core.options import markdown_table
from dipo.integrations.verl.options import parse_dipo_options
assert DiPOCoreConfig().queue_batches == 5
assert parse_dipo_options({}).core.queue_batches == 5
assert "| `queue_batches` | 5 |" in markdown_table(CORE_OPTIONS)
try:
    from dipo.integrations.trl import DiPOConfig
except ImportError:
    pass
else:
    assert DiPOConfig.__dataclass_fields__["dipo_queue_batches"].default == 5
print("ok")
"""


def test_a_changed_default_in_the_declaration_shows_up_everywhere(tmp_path):
    package = tmp_path / "dipo"
    shutil.copytree(ROOT / "src" / "dipo", package, ignore=shutil.ignore_patterns("__pycache__"))
    config = package / "core" / "config.py"
    source = config.read_text()
    declaration = '    queue_batches: int = option(\n        2, "§4 [choice]"'
    assert source.count(declaration) == 1
    config.write_text(source.replace(declaration, declaration.replace(" 2, ", " 5, ")))
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", CHANGED_DEFAULT], env=env, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
