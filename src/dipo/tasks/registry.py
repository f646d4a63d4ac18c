"""Task registry: one place that knows, for every task, how to load its rows, how to reward them and how to prompt.

In the style of verl's ``register_adv_est``: a task registers **once**, by name, with a keyword-only call, and
consumers (``dipo probe``, ``dipo train``, ``dipo eval`` and :mod:`dipo.evaluation.harness`) look it up with
:func:`get_task` instead of deciding "math or function calling?" themselves::

    from dipo.tasks.registry import get_task, register_task

    spec = get_task("nl_arithmetic")
    rows = spec.load(dataset="add1,mul1", split="heldout", limit=64, seed=0)   # list[TaskRow]
    reward = spec.make_reward()                                                # TRL reward function
    spec.defaults.temperature, spec.defaults.max_new_tokens                      # default prompt/sampling settings

    @register_task("my_task", reward=MyReward, defaults=TaskDefaults(max_new_tokens=64), description="...")
    def load_my_task(*, dataset=None, split="train", limit=None, offset=0, seed=0, **options) -> list[TaskRow]: ...

Contract of a loader: keyword-only arguments ``dataset`` (a task-specific name, file or Hub id; ``None`` = the task's
default), ``split``, ``limit``, ``offset``, ``seed``, ``data`` (:class:`DataOptions`: fields, error handling and
instruction for user datasets; the real tasks read it) and task options (``**options``); it returns
:class:`dipo.tasks.data.TaskRow` rows whose ``to_dict()`` columns are what the reward function reads (TRL passes
dataset columns to reward functions as keyword arguments). A reward factory takes no positional arguments and
returns ``fn(prompts, completions, completion_ids=None, **columns) -> list[float]``.

Built-in tasks (registered lazily, heavy imports happen only when a task is used):

- ``math``: MATH / GSM8K benchmarks or a user file (``dataset``: gsm8k, math500, math_train, math_test or a path);
  binary math-verify reward.
- ``toolcall``: BFCL v3 categories or a user file (``dataset``: a BFCL category such as ``simple``,
  ``bfcl:<category>``, ``bfcl_train`` (the live_* categories) or a file / folder / Hub id); binary BFCL AST reward
  (``toolrl``: graded ToolRL-style reward).
- ``arithmetic``: the demo's synthetic task (``"37+85="`` → reversed digits ``"221"``, plain text, no chat template);
  ``dataset`` = comma list of levels 1-5 (default all), ``split`` train/heldout; exact-match reward.
- ``nl_arithmetic``: "What is 7 + 5? Answer with just the number." (:mod:`dipo.tasks.nl_arithmetic`);
  ``dataset`` = comma list of levels (add1, mul1, add2, word; default add1), ``split`` train/heldout/all;
  last-integer reward.
- ``decimal_compare`` / ``letter_count``: tasks small models get confidently wrong ("Which is larger, 9.11 or 9.9?",
  "How many r in strawberry?"), generated locally (:mod:`dipo.tasks.decimal_compare`, :mod:`dipo.tasks.letter_count`).
- ``reasoning_gym``: short-answer generators of the optional ``reasoning-gym`` package
  (:mod:`dipo.tasks.reasoning_gym`); ``dataset`` = the generator.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from dipo.tasks.data import FieldMap, OnError, TaskRow

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


@dataclass(frozen=True)
class RewardChoice:
    """A named reward of a task (``dipo train --reward NAME``): its factory and whether it is binary (0/1)."""

    make: RewardFactory
    binary: bool = True


@dataclass(frozen=True)
class TaskEvaluation:
    """How ``dipo eval`` evaluates a task: sampling defaults (``k``, ``temperature``, ``max_new_tokens`` of
    ``defaults``), the benchmarks run when none is named, the names ``--benchmarks`` accepts (``None``: any name the
    loader knows) and the scoring of :mod:`dipo.evaluation.harness` (``"math"`` or ``"bfcl"``)."""

    defaults: TaskDefaults
    benchmarks: tuple[str, ...]
    scoring: str
    benchmark_names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TaskSpec:
    """A registered task: ``load`` (keyword-only loader), ``make_reward`` (reward factory), ``defaults``.

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


_TASKS: dict[str, TaskSpec] = {}
_BUILTINS_LOADED = False


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
    keywords are the optional :class:`TaskSpec` fields).

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
        _TASKS[name] = TaskSpec(
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
    from dipo.tasks.math import MATH_BENCHMARKS  # light modules: the heavy imports happen when a task is used
    from dipo.tasks.toolcall import BFCL_EVAL_CATEGORIES, BFCL_SIZES

    def math_reward() -> Callable[..., list[float]]:
        from dipo.tasks.math import MathAccuracyReward

        return MathAccuracyReward(answer_field="answer")

    def math_format_reward() -> Callable[..., list[float]]:
        from dipo.tasks.math import MathFormatReward

        return MathFormatReward()

    @register_task(
        "math",
        reward=math_reward,
        defaults=TaskDefaults(temperature=0.6, top_p=0.95, max_new_tokens=1024, dataset="gsm8k"),
        description="MATH / GSM8K (\\boxed{} answer, math-verify); dataset: gsm8k, math500, math_train, math_test, "
        "a level filter such as math_train:level1-2 (shuffled by --seed) or a file / Hub id with 'prompt' and "
        "'answer' fields",
        rewards={"accuracy": RewardChoice(math_reward)},
        format_reward=math_format_reward,
        evaluation=TaskEvaluation(
            defaults=TaskDefaults(k=8, temperature=0.6, top_p=0.95, max_new_tokens=1024),
            benchmarks=("math500", "gsm8k"),
            scoring="math",
            benchmark_names=tuple(MATH_BENCHMARKS),
        ),
    )
    def load_math(
        *,
        dataset: str | None = None,
        split: str = "train",
        limit: int | None = None,
        offset: int = 0,
        seed: int = 0,
        instruction: str | None = None,
        data: DataOptions | None = None,
        **options: Any,
    ) -> list[TaskRow]:
        from dipo.tasks.math import MATH_INSTRUCTION, load_math_dataset, load_math_levels, parse_math_levels

        _no_options("math", options)
        data = data or DataOptions()
        name = dataset or "gsm8k"
        end = None if limit is None else offset + limit
        instruction = instruction or data.instruction or MATH_INSTRUCTION
        leveled = parse_math_levels(name)
        if leveled is not None:
            rows = load_math_levels(*leveled, seed=seed, instruction=instruction)
        elif name in MATH_BENCHMARKS:
            rows = MATH_BENCHMARKS[name](end, instruction)
        else:
            rows = load_math_dataset(
                name,
                fields=data.fields,
                split=split,
                config_name=data.config_name,
                limit=end,
                instruction=instruction,
                on_error=data.on_error,
                max_skip_fraction=data.max_skip_fraction,
            )
        return _slice(rows, offset, limit)

    def toolcall_reward() -> Callable[..., list[float]]:
        from dipo.tasks.toolcall import BFCLAccuracyReward

        return BFCLAccuracyReward(answer_field="answer")

    def toolrl_reward() -> Callable[..., list[float]]:
        from dipo.tasks.toolcall import ToolRLReward

        return ToolRLReward(answer_field="answer")

    @register_task(
        "toolcall",
        reward=toolcall_reward,
        defaults=TaskDefaults(max_new_tokens=256, dataset="simple"),
        description="BFCL v3 function calling (AST checker); dataset: a BFCL category (simple, multiple, ...), "
        "bfcl:<category>, bfcl_train (the live_* categories) or a file / Hub id with 'prompt', 'answer' and 'tools' "
        "fields",
        rewards={"bfcl": RewardChoice(toolcall_reward), "toolrl": RewardChoice(toolrl_reward, binary=False)},
        evaluation=TaskEvaluation(
            defaults=TaskDefaults(k=1, temperature=0.0, top_p=0.95, max_new_tokens=256),
            benchmarks=BFCL_EVAL_CATEGORIES,
            scoring="bfcl",
            benchmark_names=tuple(BFCL_SIZES),
        ),
    )
    def load_toolcall(
        *,
        dataset: str | None = None,
        split: str = "train",
        limit: int | None = None,
        offset: int = 0,
        seed: int = 0,
        data: DataOptions | None = None,
        **options: Any,
    ) -> list[TaskRow]:
        from dipo.tasks.toolcall import BFCL_SIZES, BFCL_TRAIN_CATEGORIES, load_bfcl, load_toolcall_dataset

        _no_options("toolcall", options)
        data = data or DataOptions()
        name = dataset or "simple"
        end = None if limit is None else offset + limit
        category = name.split(":", 1)[1] if name.startswith("bfcl:") else name
        if name == "bfcl_train":
            rows = [row for train_category in BFCL_TRAIN_CATEGORIES for row in load_bfcl(train_category)]
        elif name.startswith("bfcl:") or category in BFCL_SIZES:
            rows = load_bfcl(category, limit=end)
        else:
            rows = load_toolcall_dataset(
                name,
                fields=data.fields,
                tools_field=data.tools_field,
                split=split,
                config_name=data.config_name,
                limit=end,
                on_error=data.on_error,
                max_skip_fraction=data.max_skip_fraction,
            )
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
        data: DataOptions | None = None,  # generated data: file/field options do not apply (ignored)
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
        data: DataOptions | None = None,  # generated data: file/field options do not apply (ignored)
        **options: Any,
    ) -> list[TaskRow]:
        from dipo.tasks.nl_arithmetic import generate_items, to_task_rows

        _no_options("nl_arithmetic", options)
        levels = tuple(x.strip() for x in (dataset or "add1").split(",") if x.strip())
        n = offset + (limit if limit is not None else 256)
        items = generate_items(n, levels=levels, seed=seed, split=split, split_seed=split_seed)
        rows = to_task_rows(items, chat=chat, source=f"nl_arithmetic-{'+'.join(levels)}-{split}")
        return _slice(rows, offset, limit)

    def _generated_loader(name: str, load_rows: Callable[..., list[TaskRow]]) -> Loader:
        def load(
            *,
            dataset: str | None = None,
            split: str = "train",
            limit: int | None = None,
            offset: int = 0,
            seed: int = 0,
            chat: bool = True,
            split_seed: int = 0,
            data: DataOptions | None = None,  # generated data: file/field options do not apply (ignored)
            **options: Any,
        ) -> list[TaskRow]:
            _no_options(name, options)
            if offset < 0 or (limit is not None and limit < 0):
                raise ValueError(f"offset and limit must be >= 0, got offset={offset}, limit={limit}")
            return load_rows(dataset, split, limit, offset, seed, split_seed=split_seed, chat=chat)

        load.__doc__ = f"Loader of the generated task {name!r} (see its module)."
        return load

    def decimal_compare_reward() -> Callable[..., list[float]]:
        from dipo.tasks.decimal_compare import DecimalCompareReward

        return DecimalCompareReward()

    def decimal_compare_rows(*args: Any, **kwargs: Any) -> list[TaskRow]:
        from dipo.tasks.decimal_compare import load_rows

        return load_rows(*args, **kwargs)

    register_task(
        "decimal_compare",
        reward=decimal_compare_reward,
        defaults=TaskDefaults(max_new_tokens=16, dataset="trap,control"),
        description="'Which is larger, 9.11 or 9.9? Answer with just the number.'; dataset: comma list of levels "
        "trap (the shorter decimal is larger), control (the longer is larger); first-named-option reward",
    )(_generated_loader("decimal_compare", decimal_compare_rows))

    def letter_count_reward() -> Callable[..., list[float]]:
        from dipo.tasks.letter_count import LetterCountReward

        return LetterCountReward()

    def letter_count_rows(*args: Any, **kwargs: Any) -> list[TaskRow]:
        from dipo.tasks.letter_count import load_rows

        return load_rows(*args, **kwargs)

    register_task(
        "letter_count",
        reward=letter_count_reward,
        defaults=TaskDefaults(max_new_tokens=16, dataset="repeat,single"),
        description='\'How many times does the letter "r" appear in the word "strawberry"?\'; dataset: comma list '
        "of levels repeat (2-4 times), single, absent; last-number reward (digits or zero-twelve)",
    )(_generated_loader("letter_count", letter_count_rows))

    def reasoning_gym_reward() -> Callable[..., list[float]]:
        from dipo.tasks.reasoning_gym import ReasoningGymReward

        return ReasoningGymReward()

    def reasoning_gym_rows(*args: Any, **kwargs: Any) -> list[TaskRow]:
        from dipo.tasks.reasoning_gym import load_rows

        return load_rows(*args, **kwargs)

    register_task(
        "reasoning_gym",
        reward=reasoning_gym_reward,
        defaults=TaskDefaults(max_new_tokens=16, dataset="basic_arithmetic"),
        description="short-answer reasoning-gym generators (optional: pip install reasoning-gym==0.1.25); dataset: "
        "basic_arithmetic, chain_sum, gcd, lcm or simple_equations; its scorer thresholded at 1.0",
    )(_generated_loader("reasoning_gym", reasoning_gym_rows))


def _no_options(task: str, options: dict[str, Any]) -> None:
    if options:
        raise ValueError(f"task {task!r} got unknown options {sorted(options)}")
