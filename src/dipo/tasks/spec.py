"""What a task declares: :class:`TaskSpec` (loader, reward, defaults, evaluation) and its parts.

Every task module builds one ``TASK = TaskSpec(...)`` (the built-in ones are listed in
:data:`dipo.tasks.registry.BUILTIN_TASK_MODULES`); :mod:`dipo.tasks.registry` registers and looks them up. This module
imports nothing heavy, so a task module can declare its spec without importing its optional dependencies.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dipo.tasks.data import FieldMap, OnError, TaskRow

# Imported inside functions: dipo.evaluation.harness (torch; it imports the tasks), only for a deprecated string
# scoring.

Loader = Callable[..., list[TaskRow]]
RewardFactory = Callable[[], Callable[..., list[float]]]
_WARNED: set[str] = set()  # deprecations warned about in this process (each warns once)


@dataclass(frozen=True)
class TaskDefaults:
    """Default prompt / sampling settings of a task (the probe and evaluation start from these).

    ``chat_template``: ``None`` = use the tokenizer's template if it has one (and the prompt is chat messages).
    """

    k: int = 8
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 32
    chat_template: bool | None = None
    dataset: str | None = None


@dataclass(frozen=True)
class DataOptions:
    """How a loader reads a user's dataset (file, folder or Hub id) and prompts its rows.

    ``fields``: where the prompt / answer / id live (``None``: the loader's default); ``tools_field`` (function
    calling): the tool schemas; ``config_name``: config of a Hub dataset; ``on_error`` / ``max_skip_fraction``: fail on
    a broken row, or count and skip it up to that fraction; ``instruction`` (math): appended to plain-text problems,
    built-in benchmarks included (``None``: the task's default instruction). A task ignores what it has no use for.
    """

    fields: FieldMap | None = None
    tools_field: str = "tools"
    config_name: str | None = None
    on_error: OnError = "raise"
    max_skip_fraction: float = 0.05
    instruction: str | None = None

    def dataset_kwargs(self) -> dict[str, Any]:
        """The keywords of a user-dataset loader (``load_math_dataset``, ``load_toolcall_dataset``) these options set
        for every task: ``fields``, ``config_name``, ``on_error``, ``max_skip_fraction``."""
        return {
            "fields": self.fields,
            "config_name": self.config_name,
            "on_error": self.on_error,
            "max_skip_fraction": self.max_skip_fraction,
        }


@dataclass(frozen=True)
class RewardChoice:
    """A named reward of a task (``dipo train --reward NAME``): its factory and whether it is binary (0/1)."""

    make: RewardFactory
    binary: bool = True


@dataclass(frozen=True)
class TaskEvaluation:
    """How ``dipo eval`` evaluates a task: sampling defaults (``k``, ``temperature``, ``max_new_tokens`` of
    ``defaults``), the benchmarks run when none is named, the names ``--benchmarks`` accepts (``None``: any name the
    loader knows) and ``scoring``: a factory (no arguments) of the task's :class:`dipo.evaluation.harness.Scoring`
    (a factory because the harness imports torch; :meth:`scorer` calls it). A string (``"math"``, ``"bfcl"``: a name
    of ``dipo.evaluation.harness.SCORINGS``) still works (its first use warns, ``FutureWarning``)."""

    defaults: TaskDefaults
    benchmarks: tuple[str, ...]
    scoring: Callable[[], Any] | str
    benchmark_names: tuple[str, ...] | None = None

    def scorer(self) -> Any:
        """The task's :class:`dipo.evaluation.harness.Scoring` object."""
        if not isinstance(self.scoring, str):
            return self.scoring()
        from dipo.evaluation.harness import SCORINGS

        if not _WARNED:
            _WARNED.add("scoring")
            warnings.warn(
                f"TaskEvaluation(scoring={self.scoring!r}) is deprecated and will be removed in dipo 0.2: pass a "
                "factory returning the Scoring object, e.g. scoring=lambda: dipo.evaluation.harness.MATH_SCORING",
                FutureWarning,
                stacklevel=2,
            )
        return SCORINGS[self.scoring]


@dataclass(frozen=True)
class TaskSpec:
    """A task: ``load`` (keyword-only loader), ``make_reward`` (reward factory), ``defaults``.

    ``rewards``: further named rewards (``dipo train --reward``; ``"auto"`` is ``make_reward``); ``format_reward``: an
    optional extra format reward (``dipo train --format_reward_weight``); ``evaluation``: ``dipo eval`` support.
    """

    name: str
    load: Loader
    make_reward: RewardFactory
    defaults: TaskDefaults = field(default_factory=TaskDefaults)
    description: str = ""
    binary: bool = True  # rewards are 0/1 (DiPO's binary mode); graded tasks need dipo_reward_mode="graded"
    rewards: Mapping[str, RewardChoice] = field(default_factory=dict)
    format_reward: RewardFactory | None = None
    evaluation: TaskEvaluation | None = None

    def reward(self, name: str = "auto") -> RewardChoice:
        """The reward called ``name`` (``"auto"``: the task's default reward); ``ValueError`` naming the choices."""
        if name == "auto":
            return RewardChoice(self.make_reward, self.binary)
        if name not in self.rewards:
            choices = " or ".join(repr(n) for n in self.rewards) or "'auto'"
            raise ValueError(f"{self.name} reward must be {choices} (or 'auto'), got {name!r}")
        return self.rewards[name]


def slice_rows(rows: list[TaskRow], offset: int, limit: int | None) -> list[TaskRow]:
    """``rows[offset : offset + limit]`` (``limit=None``: to the end); ``ValueError`` on a negative bound."""
    check_bounds(offset, limit)
    return rows[offset : None if limit is None else offset + limit]


def check_bounds(offset: int, limit: int | None) -> None:
    """``ValueError`` unless ``offset >= 0`` and ``limit`` is ``None`` or ``>= 0``."""
    if offset < 0 or (limit is not None and limit < 0):
        raise ValueError(f"offset and limit must be >= 0, got offset={offset}, limit={limit}")


def reject_options(task: str, options: Mapping[str, Any]) -> None:
    """``ValueError`` naming the options a loader of ``task`` does not know (its ``**options``), if any."""
    if options:
        raise ValueError(f"task {task!r} got unknown options {sorted(options)}")
