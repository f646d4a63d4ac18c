"""DiPOConfig: presets, precedence of explicit values, validation, core-config mapping, TRL version gate (fast)."""

from __future__ import annotations

import warnings

import pytest

pytest.importorskip("trl")

from transformers import HfArgumentParser
from trl import GRPOConfig

from dipo.integrations.trl import PRESETS, DiPOConfig
from dipo.integrations.trl._version import check_trl_version

CPU = {"use_cpu": True, "bf16": False}


def make(tmp_path, **kwargs) -> DiPOConfig:
    base = dict(output_dir=str(tmp_path), per_device_train_batch_size=8, num_generations=4, report_to="none", **CPU)
    base.update(kwargs)
    return DiPOConfig(**base)


@pytest.mark.parametrize(
    ("preset", "loss_type", "epsilon_high", "mask_truncated", "alpha"),
    [
        ("grpo", "grpo", None, False, 0.0),
        ("dapo", "dapo", 0.28, True, 0.0),
        ("dipo", "dapo", 0.28, True, 0.1),
        ("none", "dapo", None, False, 0.1),
    ],
)
def test_presets_fill_controlled_fields(tmp_path, preset, loss_type, epsilon_high, mask_truncated, alpha):
    cfg = make(tmp_path, preset=preset)
    assert cfg.loss_type == loss_type
    assert cfg.epsilon_high == epsilon_high
    assert cfg.mask_truncated_completions is mask_truncated
    assert cfg.dipo_alpha == alpha
    assert cfg.beta == 0.0 and cfg.epsilon == 0.2 and cfg.scale_rewards == "group"
    assert cfg.dipo_enabled is (alpha > 0)
    assert cfg.dipo_track is (alpha > 0)


def test_default_preset_is_dipo(tmp_path):
    cfg = make(tmp_path)
    assert cfg.preset == "dipo" and cfg.dipo_alpha == 0.1 and cfg.epsilon_high == 0.28


def test_explicit_values_win_over_preset(tmp_path):
    cfg = make(
        tmp_path,
        preset="dipo",
        loss_type="grpo",
        epsilon_high=0.3,
        mask_truncated_completions=False,
        dipo_alpha=0.0,
    )
    assert (cfg.loss_type, cfg.epsilon_high, cfg.mask_truncated_completions, cfg.dipo_alpha) == ("grpo", 0.3, False, 0)
    assert not cfg.dipo_enabled
    # the TRL default value given explicitly also wins (None is the only "unset" marker)
    assert make(tmp_path, preset="grpo", loss_type="dapo").loss_type == "dapo"
    assert make(tmp_path, preset="dapo", dipo_log_diagnostics=True).dipo_track


def test_every_preset_names_the_same_fields():
    assert {frozenset(v) for v in PRESETS.values()} == {frozenset(PRESETS["dipo"])}


def test_unknown_preset_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"unknown preset='dpo'.*'grpo'"):
        make(tmp_path, preset="dpo")


def test_num_generations_below_two_is_rejected(tmp_path):
    with pytest.raises(ValueError, match=r"DiPOConfig: num_generations=1"):
        make(tmp_path, num_generations=1, per_device_train_batch_size=4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dipo_membership": "some"}, "membership"),
        ({"dipo_selection": "min_ppl"}, "selection"),
        ({"dipo_reward_mode": "soft"}, "reward_mode"),
        ({"dipo_alpha": -0.1}, "alpha"),
        ({"dipo_queue_batches": 0}, "queue_batches"),
        ({"dipo_judgment_confidence": 1.5}, "judgment_confidence"),
        ({"dipo_realloc_normalizer": "own"}, "realloc_normalizer"),
        ({"dipo_ppl_source": "vllm"}, "dipo_ppl_source"),
        ({"soft_overlong_cache": 600}, "soft_overlong_cache"),
    ],
)
def test_bad_dipo_options_fail_at_construction(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make(tmp_path, **kwargs)


def test_core_config_mapping(tmp_path):
    core = make(
        tmp_path, scale_rewards=False, dipo_membership="mean", dipo_judgment_confidence=None
    ).dipo_core_config()
    assert core.scale_rewards == "none" and core.std == "unbiased" and core.std_eps == 1e-4
    assert core.membership == "mean" and core.judgment_confidence is None and core.alpha == 0.1
    assert make(tmp_path, scale_rewards="batch").dipo_core_config().scale_rewards == "batch"
    assert core.selection == "max_ppl"
    control = make(tmp_path, dipo_selection="random", seed=7).dipo_core_config()
    assert control.selection == "random" and control.selection_seed == 7


def test_from_grpo_config_keeps_trl_values(tmp_path):
    grpo = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        num_generations=4,
        loss_type="bnpo",
        report_to="none",
        **CPU,
    )
    cfg = DiPOConfig.from_grpo_config(grpo, dipo_membership="all")
    assert isinstance(cfg, DiPOConfig) and cfg.preset == "none"
    assert cfg.loss_type == "bnpo" and cfg.epsilon_high is None and cfg.mask_truncated_completions is False
    assert cfg.dipo_alpha == 0.1 and cfg.dipo_membership == "all" and cfg.generation_batch_size == 8
    with pytest.raises(ValueError, match="unknown DiPO options"):
        DiPOConfig.from_grpo_config(grpo, alpha=0.2)


def test_one_config_file_selects_the_preset(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(
        f"output_dir: {tmp_path}\npreset: grpo\nnum_generations: 4\nper_device_train_batch_size: 8\n"
        "dipo_log_diagnostics: true\nreport_to: none\nuse_cpu: true\nbf16: false\n"
    )
    (cfg,) = HfArgumentParser(DiPOConfig).parse_yaml_file(str(path))
    assert cfg.loss_type == "grpo" and cfg.dipo_alpha == 0.0 and cfg.dipo_track
    (cli,) = HfArgumentParser(DiPOConfig).parse_args_into_dataclasses(
        [
            "--output_dir",
            str(tmp_path),
            "--preset",
            "dapo",
            "--epsilon_high",
            "0.25",
            "--num_generations",
            "4",
            "--per_device_train_batch_size",
            "8",
            "--use_cpu",
            "--bf16",
            "false",
        ]
    )
    assert cli.epsilon_high == 0.25 and cli.mask_truncated_completions is True and cli.dipo_alpha == 0.0


def test_trl_version_gate():
    assert check_trl_version("1.16.0").major == 1
    with pytest.raises(ImportError, match=r"trl>=1.14,<1.17"):
        check_trl_version("2.0.0")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_trl_version("1.20.1")
    assert any("outside the tested range" in str(w.message) for w in caught)


def test_threshold_rule_maps_to_the_core_and_is_validated(tmp_path):
    assert make(tmp_path).dipo_core_config().threshold_rule == "error"
    assert make(tmp_path, dipo_threshold_rule="balanced").dipo_core_config().threshold_rule == "balanced"
    with pytest.raises(ValueError, match=r"DiPOConfig: unknown dipo_threshold_rule='auc'"):
        make(tmp_path, dipo_threshold_rule="auc")
