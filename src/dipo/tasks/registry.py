"""Task registry: one place where consumers find, for every task, how to load its rows, reward and prompt them.

In the style of verl's ``register_adv_est``: a task registers **once**, by name, and consumers (``dipo probe``,
``dipo train``, ``dipo eval`` and :mod:`dipo.evaluation.harness`) look it up with :func:`get_task` instead of deciding
"math or function calling?" themselves::

    from dipo.tasks.registry import get_task, register_task

    spec = get_task("nl_arithmetic")
    rows = spec.load(dataset="add1,mul1", split="heldout", limit=64, seed=0)   # list[TaskRow]
    reward = spec.make_reward()                                                # TRL reward function
    spec.defaults.temperature, spec.defaults.max_new_tokens                      # default prompt/sampling settings

    @register_task("my_task", reward=MyReward, defaults=TaskDefaults(max_new_tokens=64), description="...")
    def load_my_task(*, dataset=None, split="train", limit=None, offset=0, seed=0, **options) -> list[TaskRow]: ...

    register(TaskSpec("my_task", load_my_task, MyReward, ...))   # the same, from a spec

Contract of a loader: keyword-only arguments ``dataset`` (a task-specific name, file or Hub id; ``None`` = the task's
default), ``split``, ``limit``, ``offset``, ``seed``, ``data`` (:class:`DataOptions`: fields, error handling and
instruction for user datasets; the real tasks read it) and task options (``**options``); it returns
:class:`dipo.tasks.data.TaskRow` rows whose ``to_dict()`` columns are what the reward function reads (TRL passes
dataset columns to reward functions as keyword arguments). A reward factory takes no positional arguments and
returns ``fn(prompts, completions, completion_ids=None, **columns) -> list[float]``.

Built-in tasks: each module of :data:`BUILTIN_TASK_MODULES` declares its spec as ``TASK`` (its docstring and
``TASK.description`` say what the task is); they are imported on the first lookup, and their heavy dependencies
(math-verify, BFCL, reasoning-gym) only when a task is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

from dipo.tasks.spec import (
    DataOptions,
    Loader,
    RewardChoice,
    RewardFactory,
    TaskDefaults,
    TaskEvaluation,
    TaskSpec,
)

__all__ = [
    "BUILTIN_TASK_MODULES",
    "DataOptions",
    "Loader",
    "RewardChoice",
    "RewardFactory",
    "TaskDefaults",
    "TaskEvaluation",
    "TaskSpec",
    "get_task",
    "list_tasks",
    "register",
    "register_task",
]

#: Modules declaring a built-in task as ``TASK`` (registered in this order on the first lookup).
BUILTIN_TASK_MODULES: tuple[str, ...] = (
    "dipo.tasks.math",
    "dipo.tasks.toolcall",
    "dipo.tasks.arithmetic",
    "dipo.tasks.nl_arithmetic",
    "dipo.tasks.decimal_compare",
    "dipo.tasks.letter_count",
    "dipo.tasks.reasoning_gym",
)

_TASKS: dict[str, TaskSpec] = {}
_BUILTINS_LOADED = False


def register(spec: TaskSpec, *, overwrite: bool = False) -> TaskSpec:
    """Register ``spec`` under ``spec.name`` and return it.

    Raises ``ValueError`` if the name is already registered (pass ``overwrite=True`` to replace it on purpose).
    """
    name = spec.name
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"register_task: the task name must be a non-empty string, got {name!r}")
    if not callable(spec.make_reward):
        raise TypeError(f"register_task({name!r}): reward must be a callable returning a reward function")
    if not callable(spec.load):
        raise TypeError(f"register_task({name!r}): the loader is not callable")
    if name in _TASKS and not overwrite:
        raise ValueError(
            f"task {name!r} is already registered (by {_TASKS[name].load.__module__}); pick another name or "
            "pass overwrite=True"
        )
    _TASKS[name] = spec
    return spec


def register_task(
    name: str,
    *,
    reward: RewardFactory,
    defaults: TaskDefaults | None = None,
    description: str = "",
    binary: bool = True,
    rewards: Mapping[str, RewardChoice] | None = None,
    format_reward: RewardFactory | None = None,
    evaluation: TaskEvaluation | None = None,
    overwrite: bool = False,
) -> Callable[[Loader], Loader]:
    """Decorator registering ``loader`` as task ``name`` with its reward factory and default settings (the other
    keywords are the optional :class:`TaskSpec` fields); see :func:`register` for the errors."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"register_task: the task name must be a non-empty string, got {name!r}")
    if not callable(reward):
        raise TypeError(f"register_task({name!r}): reward must be a callable returning a reward function")

    def decorator(loader: Loader) -> Loader:
        if not callable(loader):
            raise TypeError(f"register_task({name!r}): the decorated loader is not callable")
        spec = TaskSpec(
            name,
            loader,
            reward,
            defaults or TaskDefaults(),
            description,
            binary,
            dict(rewards or {}),
            format_reward,
            evaluation,
        )
        register(spec, overwrite=overwrite)
        return loader

    return decorator


def get_task(name: str) -> TaskSpec:
    """The registered task ``name``; ``KeyError`` listing the registered names if there is none."""
    _load_builtins()
    if name not in _TASKS:
        raise KeyError(f"unknown task {name!r}; registered tasks: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]


def list_tasks(evaluable: bool = False) -> list[str]:
    """Names of every registered task, sorted (``evaluable``: only those ``dipo eval`` can evaluate)."""
    _load_builtins()
    return sorted(name for name, spec in _TASKS.items() if spec.evaluation is not None or not evaluable)


def _load_builtins() -> None:
    """Register the ``TASK`` of every module of :data:`BUILTIN_TASK_MODULES` (once per process)."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    for module in BUILTIN_TASK_MODULES:
        register(importlib.import_module(module).TASK)
