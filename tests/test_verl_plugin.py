"""Loading the verl plugin: ``verl.plugins`` entry point, env-var fallback, and the error without verl."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

import pytest

CHECK = (
    "import sys, verl\n"
    "from verl.trainer.ppo import core_algos\n"
    "from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY\n"
    "fn = core_algos.ADV_ESTIMATOR_REGISTRY.get('dipo')\n"
    "loaded = 'dipo.integrations.verl' in sys.modules\n"
    "shim = loaded and sys.modules['dipo.integrations.verl'].shim_status()['installed']\n"
    "print('RESULT', getattr(fn, '__module__', None), loaded, shim, 'dipo_sync' in TRAINER_REGISTRY)\n"
)


def run_python(code: str, **env: str) -> str:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VERL_USE_EXTERNAL")}
    full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], env=full_env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def result_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("RESULT"))


def test_entry_point_is_declared():
    eps = importlib.metadata.entry_points(group="verl.plugins")
    assert [ep.value for ep in eps if ep.name == "dipo"] == ["dipo.integrations.verl"]


@pytest.mark.slow
def test_import_verl_loads_the_plugin_through_the_entry_point():
    pytest.importorskip("verl", reason="verl is not installed: pip install 'dipo[verl]'")
    assert result_line(run_python(CHECK)) == "RESULT dipo.integrations.verl.estimator True True True"


@pytest.mark.slow
def test_env_var_fallback_and_negative_control():
    pytest.importorskip("verl", reason="verl is not installed: pip install 'dipo[verl]'")
    loaded = run_python(CHECK, VERL_USE_EXTERNAL_PLUGINS="none", VERL_USE_EXTERNAL_MODULES="dipo.integrations.verl")
    assert result_line(loaded) == "RESULT dipo.integrations.verl.estimator True True True"
    not_loaded = run_python(CHECK, VERL_USE_EXTERNAL_PLUGINS="none")
    assert result_line(not_loaded) == "RESULT None False False False"


def test_clear_import_error_without_verl():
    code = (
        "import sys\n"
        "sys.modules['verl'] = None  # as if verl were not installed\n"
        "import dipo, dipo.integrations, dipo.core\n"
        "try:\n"
        "    import dipo.integrations.verl\n"
        "except ImportError as err:\n"
        "    print('RESULT', err)\n"
    )
    assert "pip install 'dipo[verl]'" in result_line(run_python(code))


@pytest.mark.slow
def test_clear_import_error_without_verls_trainer_stack():
    """``pip install verl`` without its core extra lacks e.g. cachetools, which verl's ray_trainer imports."""
    pytest.importorskip("verl", reason="verl is not installed: pip install 'dipo[verl]'")
    code = (
        "import sys\n"
        "sys.modules['cachetools'] = None  # as if verl's verl-core extra were not installed\n"
        "import verl\n"
        "try:\n"
        "    import dipo.integrations.verl\n"
        "except ImportError as err:\n"
        "    print('RESULT', err)\n"
    )
    line = result_line(run_python(code, VERL_USE_EXTERNAL_PLUGINS="none"))
    assert "pip install 'dipo[verl]'" in line and "cachetools" in line
