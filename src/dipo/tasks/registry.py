"""Task registry: one place that knows, for every task, how to load its rows, how to reward them and how to prompt.

In the style of verl's ``register_adv_est``: a task registers **once**, by name, with a keyword-only call, and
consumers (``dipo probe`` today; ``dipo train`` / ``dipo eval`` can move onto it) look it up with :func:`get_task`::

    from dipo.tasks.registry import get_task, register_task

    spec = get_task("nl_arithmetic")
    rows = spec.load(dataset="add1,mul1", split="heldout", limit=64, seed=0)   # list[TaskRow]
    reward = spec.make_reward()                                                # TRL reward function
    spec.defaults.temperature, spec.defaults.max_new_tokens                      # default prompt/sampling settings

    @register_task("my_task", reward=MyReward, defaults=TaskDefaults(max_new_tokens=64), description="...")
    def load_my_task(*, dataset=None, split="train", limit=None, offset=0, seed=0, **options) -> list[TaskRow]: ...

Contract of a loader: keyword-only arguments ``dataset`` (a task-specific name, file or Hub id; ``None`` = the task's
default), ``split``, ``limit``, ``offset``, ``seed`` and task options (``**options``); it returns
:class:`dipo.tasks.data.TaskRow` rows whose ``to_dict()`` columns are what the reward function reads (TRL passes
dataset columns to reward functions as keyword arguments). A reward factory takes no positional arguments and
returns ``fn(prompts, completions, completion_ids=None, **columns) -> list[float]``.

Built-in tasks (registered lazily, heavy imports happen only when a task is used):

- ``math``: MATH / GSM8K benchmarks or a user file (``dataset``: gsm8k, math500, math_train, math_test or a path);
  binary math-verify reward.
- ``toolcall``: BFCL v3 categories or a user file (``dataset``: a BFCL category such as ``simple`` or a path);
  binary BFCL AST reward.
- ``arithmetic``: the demo's synthetic task (``"37+85="`` → reversed digits ``"221"``, plain text, no chat template);
  ``dataset`` = comma list of levels 1-5 (default all), ``split`` train/heldout; exact-match reward.
- ``nl_arithmetic``: "What is 7 + 5? Answer with just the number." (:mod:`dipo.tasks.nl_arithmetic`);
  ``dataset`` = comma list of levels (add1, mul1, add2, word; default add1), ``split`` train/heldout/all;
  last-integer reward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dipo.tasks.data import TaskRow

Loader = Callable[..., list[TaskRow]]
RewardFactory = Callable[[], Callable[..., list[float]]]


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
class TaskSpec:
    """A registered task: ``load`` (keyword-only loader), ``make_reward`` (reward factory), ``defaults``."""

    name: str
    load: Loader
    make_reward: RewardFactory
    defaults: TaskDefaults = field(default_factory=TaskDefaults)
    description: str = ""
    binary: bool = True  # rewards are 0/1 (DiPO's binary mode); graded tasks need dipo_reward_mode="graded"


_TASKS: dict[str, TaskSpec] = {}
_BUILTINS_LOADED = False


def register_task(
    name: str,
    *,
    reward: RewardFactory,
    defaults: TaskDefaults | None = None,
    description: str = "",
    binary: bool = True,
    overwrite: bool = False,
) -> Callable[[Loader], Loader]:
    """Decorator registering ``loader`` as task ``name`` with its reward factory and default settings.

    Raises ``ValueError`` if ``name`` is already registered (pass ``overwrite=True`` to replace it on purpose).
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"register_task: the task name must be a non-empty string, got {name!r}")
    if not callable(reward):
        raise TypeError(f"register_task({name!r}): reward must be a callable returning a reward function")

    def decorator(loader: Loader) -> Loader:
        if not callable(loader):
            raise TypeError(f"register_task({name!r}): the decorated loader is not callable")
        if name in _TASKS and not overwrite:
            raise ValueError(
                f"task {name!r} is already registered (by {_TASKS[name].load.__module__}); pick another name or "
                "pass overwrite=True"
            )
        _TASKS[name] = TaskSpec(name, loader, reward, defaults or TaskDefaults(), description, binary)
        return loader

    return decorator


def get_task(name: str) -> TaskSpec:
    """The registered task ``name``; ``KeyError`` listing the registered names if there is none."""
    _load_builtins()
    if name not in _TASKS:
        raise KeyError(f"unknown task {name!r}; registered tasks: {', '.join(sorted(_TASKS))}")
    return _TASKS[name]


def list_tasks() -> list[str]:
    """Names of every registered task, sorted."""
    _load_builtins()
    return sorted(_TASKS)


def _slice(rows: list[TaskRow], offset: int, limit: int | None) -> list[TaskRow]:
    if offset < 0 or (limit is not None and limit < 0):
        raise ValueError(f"offset and limit must be >= 0, got offset={offset}, limit={limit}")
    return rows[offset : None if limit is None else offset + limit]


# --- built-in tasks ------------------------------------------------------------------------------------------------


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True

    def math_reward() -> Callable[..., list[float]]:
        from dipo.tasks.math import MathAccuracyReward

        return MathAccuracyReward(answer_field="answer")

    @register_task(
        "math",
        reward=math_reward,
        defaults=TaskDefaults(temperature=0.6, top_p=0.95, max_new_tokens=1024, dataset="gsm8k"),
        description="MATH / GSM8K (\\boxed{} answer, math-verify); dataset: gsm8k, math500, math_train, math_test "
        "or a file / Hub id with 'prompt' and 'answer' fields",
    )
    def load_math(
        *,
        dataset: str | None = None,
        split: str = "train",
        limit: int | None = None,
        offset: int = 0,
        seed: int = 0,
        instruction: str | None = None,
        **options: Any,
    ) -> list[TaskRow]:
        from dipo.tasks.math import MATH_BENCHMARKS, MATH_INSTRUCTION, load_math_dataset

        _no_options("math", options)
        name = dataset or "gsm8k"
        end = None if limit is None else offset + limit
        if name in MATH_BENCHMARKS:
            rows = MATH_BENCHMARKS[name](end, instruction or MATH_INSTRUCTION)
        else:
            rows = load_math_dataset(name, split=split, limit=end, instruction=instruction or MATH_INSTRUCTION)
        return _slice(rows, offset, limit)

    def toolcall_reward() -> Callable[..., list[float]]:
        from dipo.tasks.toolcall import BFCLAccuracyReward

        return BFCLAccuracyReward(answer_field="answer")

    @register_task(
        "toolcall",
        reward=toolcall_reward,
        defaults=TaskDefaults(max_new_tokens=256, dataset="simple"),
        description="BFCL v3 function calling (AST checker); dataset: a BFCL category (simple, multiple, ...) or a "
        "file / Hub id with 'prompt', 'answer' and 'tools' fields",
    )
    def load_toolcall(
        *,
        dataset: str | None = None,
        split: str = "train",
        limit: int | None = None,
        offset: int = 0,
        seed: int = 0,
        **options: Any,
    ) -> list[TaskRow]:
        from dipo.tasks.toolcall import load_bfcl, load_toolcall_dataset

        _no_options("toolcall", options)
        name = dataset or "simple"
        end = None if limit is None else offset + limit
        looks_like_path = "/" in name or "." in name
        rows = load_toolcall_dataset(name, split=split, limit=end) if looks_like_path else load_bfcl(name, end)
        return _slice(rows, offset, limit)

    def arithmetic_reward_factory() -> Callable[..., list[float]]:
        from dipo.tasks.arithmetic import arithmetic_reward

        return arithmetic_reward

    @register_task(
        "arithmetic",
        reward=arithmetic_reward_factory,
        defaults=TaskDefaults(max_new_tokens=8, chat_template=False, dataset="1,2,3,4,5"),
        description="the demo's synthetic addition ('37+85=' -> reversed digits '221'; plain text); dataset: comma "
        "list of levels 1-5",
    )
    def load_arithmetic(
        *,
        dataset: str | None = None,
        split: str = "heldout",
        limit: int | None = None,
        offset: int = 0,
        seed: int = 0,
        ops: str = "+",
        **options: Any,
    ) -> list[TaskRow]:
        from dipo.tasks.arithmetic import ArithmeticTask

        _no_options("arithmetic", options)
        try:
            levels = tuple(int(x) for x in (dataset or "1,2,3,4,5").split(",") if x.strip())
        except ValueError as err:
            raise ValueError(f"arithmetic: dataset must be a comma list of levels 1-5, got {dataset!r}") from err
        task = ArithmeticTask(levels=levels, ops=tuple(ops.split(",")))
        n = offset + (limit if limit is not None else 256)
        items = task.sample(n, seed=seed, split=split)
        rows = [
            TaskRow(it.prompt, it.answer, f"arithmetic-{split}-{i}", "arithmetic", {"level": it.level, "op": it.op})
            for i, it in enumerate(items)
        ]
        return _slice(rows, offset, limit)

    def nl_reward() -> Callable[..., list[float]]:
        from dipo.tasks.nl_arithmetic import NLArithmeticReward

        return NLArithmeticReward(answer_field="answer")

    @register_task(
        "nl_arithmetic",
        reward=nl_reward,
        defaults=TaskDefaults(max_new_tokens=16, dataset="add1"),
        description="natural-language arithmetic ('What is 7 + 5? Answer with just the number.'); dataset: comma "
        "list of levels add1, mul1, add2, word",
    )
    def load_nl_arithmetic(
        *,
        dataset: str | None = None,
        split: str = "train",
        limit: int | None = None,
        offset: int = 0,
        seed: int = 0,
        chat: bool = True,
        split_seed: int = 0,
        **options: Any,
    ) -> list[TaskRow]:
        from dipo.tasks.nl_arithmetic import generate_items, to_task_rows

        _no_options("nl_arithmetic", options)
        levels = tuple(x.strip() for x in (dataset or "add1").split(",") if x.strip())
        n = offset + (limit if limit is not None else 256)
        items = generate_items(n, levels=levels, seed=seed, split=split, split_seed=split_seed)
        rows = to_task_rows(items, chat=chat, source=f"nl_arithmetic-{'+'.join(levels)}-{split}")
        return _slice(rows, offset, limit)


def _no_options(task: str, options: dict[str, Any]) -> None:
    if options:
        raise ValueError(f"task {task!r} got unknown options {sorted(options)}")
