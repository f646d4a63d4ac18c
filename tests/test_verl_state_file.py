"""The verl trainers' DiPO state file (issue 12 items 6, 14): shared atomic writer, unreadable files named, option
changes that alter the queue's labels refused on resume."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("verl")

from dipo.core import DiPO, DiPOCoreConfig
from dipo.integrations._state import DIPO_STATE_NAME
from dipo.integrations.verl import trainer as verl_trainer


def estimator_state(**options):
    """What ``save_dipo_state`` / ``load_dipo_state`` use of an ``EstimatorState``: the core and log-prob source."""
    return SimpleNamespace(core=DiPO(DiPOCoreConfig(**options)), options=SimpleNamespace(log_probs="auto"))


def saved_folder(tmp_path, **options):
    state = estimator_state(**options)
    state.core.step(torch.tensor([1.0, 0.0, 1.0, 1.0]), torch.tensor([0.1, 0.9, 0.2, 0.3]), 2)
    verl_trainer.save_dipo_state(state, str(tmp_path), global_step=3)
    return tmp_path


def test_one_state_file_name_for_both_integrations():
    from dipo.integrations.trl import DIPO_STATE_NAME as TRL_NAME

    assert verl_trainer.DIPO_STATE_NAME is DIPO_STATE_NAME and TRL_NAME is DIPO_STATE_NAME


def test_verl_state_roundtrip_and_no_temporary_files(tmp_path):
    folder = saved_folder(tmp_path)
    assert [p.name for p in folder.iterdir()] == [DIPO_STATE_NAME]
    fresh = estimator_state()
    assert verl_trainer.load_dipo_state(fresh, str(folder)) and len(fresh.core.queue) == 4


def test_verl_truncated_state_file_is_named(tmp_path):
    folder = saved_folder(tmp_path)
    path = folder / DIPO_STATE_NAME
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=rf"DiPO state file {path} cannot be read"):
        verl_trainer.load_dipo_state(estimator_state(), str(folder))


def test_verl_resume_refuses_a_new_label_meaning_and_warns_otherwise(tmp_path):
    folder = saved_folder(tmp_path)
    with pytest.raises(ValueError, match=r"algorithm.dipo.reward_mode='binary' when saved, 'graded' now"):
        verl_trainer.load_dipo_state(estimator_state(reward_mode="graded"), str(folder))
    with pytest.warns(UserWarning, match=r"algorithm.dipo.alpha: 0.1 -> 0.5"):
        assert verl_trainer.load_dipo_state(estimator_state(alpha=0.5), str(folder))
