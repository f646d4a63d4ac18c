"""``dipo train``: one YAML/CLI config → model, task, method preset (grpo / dapo / dipo), rewards, DiPOTrainer.

Options are TRL's (``TrlParser``): the fields of :class:`TaskArguments` (below), of ``dipo.DiPOConfig`` (every
``trl.GRPOConfig`` option plus ``preset`` and the ``dipo_*`` options) and of ``trl.ModelConfig``, given on the
command line (``--learning_rate 1e-6``) and/or in a YAML file (``--config recipe.yaml``; the command line wins).
``dipo train --help-all`` lists them all. Examples::

    dipo train --config recipes/math_qwen3_8b_dapo17k.yaml
    dipo train --model_name_or_path smollm2-135m-instruct --task math --dataset math_train --preset dipo \\
        --max_steps 1 --per_device_train_batch_size 2 --num_generations 2 --max_completion_length 32 \\
        --output_dir runs/smoke
    dipo train --config recipes/smoke_smollm2_math.yaml --resume_from_checkpoint true   # newest complete checkpoint
    dipo train --config recipes/real_rl_smollm2_nl_arith.yaml --preset dapo --output_dir runs/real_rl_dapo
    dipo train --summarize runs/real_rl_dapo runs/real_rl_dipo      # markdown tables of finished runs

Every run writes ``<output_dir>/train_summary.json`` (settings, wall times, TRL's ``log_history`` with the per-step
rewards and ``dipo/*`` diagnostics); with ``--heldout_prompts N`` it also measures held-out mean@k and pass@k before
and after training (:mod:`dipo.cli.train_report`).

An ``output_dir`` that already holds checkpoints or a trained model is refused unless the run resumes
(``--resume_from_checkpoint``) or ``--overwrite_output_dir`` is given. Bad input (missing files, invalid values, an
unwritable folder) is one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dipo.cli.errors import (
    INPUT_ERRORS,
    NON_NEGATIVE,
    NON_NEGATIVE_INT,
    POSITIVE,
    POSITIVE_INT,
    UNIT_OPEN_LOW,
    Range,
    check_model_source,
    describe_error,
    model_load_error,
)
from dipo.cli.train_report import HELDOUT_ROWS_SEED, heldout_accuracy, run_summary, summarize, write_summary
from dipo.fileio import check_output_dir as guard
from dipo.fileio import load_yaml
from dipo.tasks.assets import resolve_model
from dipo.tasks.data import FieldMap
from dipo.tasks.registry import DataOptions, get_task, list_tasks

# Imported inside functions: torch, transformers, TRL, datasets and the dipo modules that import them (dipo.DiPOConfig
# / DiPOTrainer, dipo.integrations.trl, dipo.evaluation), only when training: `dipo --help` imports this module.

logger = logging.getLogger("dipo.train")


def _registered_tasks() -> str:
    return ", ".join(repr(name) for name in list_tasks())


@dataclass
class TaskArguments:
    """What to train on and how it is rewarded."""

    task: str = field(
        default="math",
        metadata={"help": f"A task of dipo.tasks.registry: {_registered_tasks()}."},
    )
    dataset: str = field(
        default="math_train",
        metadata={
            "help": "Built-in: math_train (MATH minus MATH-500, 4,500), gsm8k, math500, math_test; bfcl_train (BFCL "
            "live_* categories) or bfcl:<category>. Otherwise a .jsonl/.json/.parquet file, a folder or a Hub id "
            "(e.g. BytedTsinghua-SIA/DAPO-Math-17k with --answer_field reward_model.ground_truth)."
        },
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of a Hub dataset or folder."})
    dataset_config: str | None = field(default=None, metadata={"help": "Config name of a Hub dataset."})
    prompt_field: str = field(default="prompt", metadata={"help": "Dotted field holding the prompt (text/messages)."})
    answer_field: str = field(
        default="answer", metadata={"help": "Dotted field holding the gold answer (math) or gold calls (toolcall)."}
    )
    tools_field: str = field(default="tools", metadata={"help": "toolcall: field holding the tool schemas (JSON)."})
    id_field: str | None = field(default=None, metadata={"help": "Optional field holding a row id."})
    dataset_limit: int | None = field(default=None, metadata={"help": "Use only the first N rows."})
    skip_broken_rows: bool = field(
        default=False,
        metadata={"help": "Count, log and skip rows with a missing/unparseable answer instead of failing."},
    )
    max_skip_fraction: float = field(
        default=0.05, metadata={"help": "With skip_broken_rows: fail if more than this fraction of rows is broken."}
    )
    instruction: str | None = field(
        default=None,
        metadata={"help": "math: instruction appended to plain-text problems (default: put the answer in \\boxed{})."},
    )
    reward: str = field(
        default="auto",
        metadata={
            "help": "math: 'accuracy' (math-verify, binary). toolcall: 'bfcl' (BFCL AST checker, binary) or "
            "'toolrl' (graded format + name + parameter + value matching in [0, 1]; needs dipo_reward_mode=graded "
            "when DiPO is on). 'auto': accuracy / bfcl."
        },
    )
    format_reward_weight: float = field(
        default=0.0,
        metadata={
            "help": "math: weight of an extra \\boxed{} format reward (0 = off). Makes the reward graded, so DiPO "
            "needs dipo_reward_mode=graded."
        },
    )
    heldout_prompts: int = field(
        default=0,
        metadata={
            "help": "Held-out prompts for mean@k / pass@k before and after training, sampled like training "
            "(temperature, top_p, max_completion_length; 0 = no held-out evaluation). The results go to "
            "<output_dir>/train_summary.json."
        },
    )
    heldout_dataset: str | None = field(
        default=None, metadata={"help": "Dataset of the held-out prompts (default: --dataset; e.g. math500)."}
    )
    heldout_split: str = field(
        default="heldout",
        metadata={"help": "Split of the held-out prompts ('heldout': the held-out side of a generated task)."},
    )
    heldout_k: int = field(default=8, metadata={"help": "Samples per held-out prompt (the k of mean@k, pass@k)."})
    heldout_batch_size: int = field(default=8, metadata={"help": "Held-out prompts per generate call."})
    heldout_before: bool = field(
        default=True,
        metadata={"help": "Measure held-out accuracy before training too (--no_heldout_before: only after)."},
    )
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads (default: torch's choice)."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "aliases": ["--overwrite"],
            "help": "Train even if output_dir already holds checkpoints or a trained model (they are overwritten "
            "as the new run saves; checkpoint-* folders of a longer earlier run stay). Without it such an "
            "output_dir is refused unless the run resumes one of its checkpoints.",
        },
    )

    def __post_init__(self) -> None:
        if self.dataset_limit is not None and self.dataset_limit < 1:
            raise ValueError(f"dataset_limit must be >= 1 (leave it unset for all rows), got {self.dataset_limit}")
        if not 0.0 <= self.max_skip_fraction <= 1.0:
            raise ValueError(f"max_skip_fraction must be in [0, 1], got {self.max_skip_fraction}")
        if self.format_reward_weight < 0:
            raise ValueError(f"format_reward_weight must be >= 0 (0 = off), got {self.format_reward_weight}")
        if self.heldout_prompts < 0:
            raise ValueError(f"heldout_prompts must be >= 0 (0 = no held-out evaluation), got {self.heldout_prompts}")
        for name in ("heldout_k", "heldout_batch_size") + (("threads",) if self.threads is not None else ()):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config`` is declared here; every other option is handed to ``TrlParser`` in :func:`run` (TRL is only
    imported when ``dipo train`` runs, so ``dipo --help`` stays fast)."""
    parser.description = (
        "Train with GRPO / DAPO / DiPO on a real task. Options are TRL's (TrlParser): TaskArguments, dipo.DiPOConfig "
        "and trl.ModelConfig fields, e.g. --model_name_or_path, --task, --dataset, --preset, --learning_rate, in YAML "
        "(--config) and/or on the command line (which wins)."
    )
    parser.epilog = "Run `dipo train --help-all` for every option (TaskArguments, DiPOConfig, ModelConfig)."
    parser.add_argument("--config", default=None, help="YAML file of options (TRL format); CLI options override it")
    parser.set_defaults(trl_args=[])
    original = parser.parse_known_args

    def parse_known_args(args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        namespace, extras = original(args, namespace)
        namespace.trl_args = [*getattr(namespace, "trl_args", []), *extras]
        return namespace, []

    parser.parse_known_args = parse_known_args  # type: ignore[method-assign]


def build_parser() -> Any:
    from trl import ModelConfig, TrlParser

    from dipo import DiPOConfig

    return TrlParser((TaskArguments, DiPOConfig, ModelConfig), prog="dipo train")


def _given(argv: list[str], name: str) -> bool:
    """True if option ``name`` is set on the command line or in the ``--config`` YAML."""
    if any(a == f"--{name}" or a.startswith(f"--{name}=") for a in argv):
        return True
    if "--config" in argv and argv.index("--config") + 1 < len(argv):
        return name in read_config(argv[argv.index("--config") + 1])
    return False


def read_config(path: str) -> dict[str, Any]:
    """The options of a ``--config`` YAML file; ``ValueError`` naming the file (and the line) if it is not UTF-8
    YAML, nests too deeply or is not a mapping of options."""
    config = load_yaml(path)
    if config is None:
        return {}
    if not isinstance(config, dict):
        raise ValueError(
            f"config file {path!r} holds a YAML {type(config).__name__}; it must map option names to values"
        )
    return config


def parse(argv: list[str]) -> tuple[TaskArguments, Any, Any]:
    """``(task_args, DiPOConfig, ModelConfig)`` from command-line tokens (``--config`` YAML included).

    Without a GPU, ``bf16`` defaults to false (TRL turns it on by default and then refuses to run on a CPU).
    """
    import torch

    argv = list(argv)
    if not torch.cuda.is_available() and not _given(argv, "bf16"):
        argv += ["--bf16", "false"]
    task_args, training_args, model_args = build_parser().parse_args_and_config(args=argv)
    return task_args, training_args, model_args


def _numeric_rules() -> dict[str, Any]:
    """Valid values of the numeric TRL / transformers options (unset ``None`` values are not checked), in the rule
    type that ``dipo eval`` and ``dipo probe`` check their options with (:class:`dipo.cli.errors.Range`)."""
    return {
        "per_device_train_batch_size": POSITIVE_INT,
        "per_device_eval_batch_size": POSITIVE_INT,
        "gradient_accumulation_steps": POSITIVE_INT,
        "num_generations": Range(low=2, integer=True),
        "max_completion_length": POSITIVE_INT,
        "steps_per_generation": POSITIVE_INT,
        "generation_batch_size": POSITIVE_INT,
        "num_iterations": POSITIVE_INT,
        "max_steps": Range(low=1, integer=True, also=(-1,)),
        "learning_rate": NON_NEGATIVE,
        "temperature": POSITIVE,
        "top_p": UNIT_OPEN_LOW,
        "top_k": NON_NEGATIVE_INT,
        "min_p": Range(low=0, high=1),
        "repetition_penalty": POSITIVE,
        "beta": NON_NEGATIVE,
        "epsilon": NON_NEGATIVE,
        "epsilon_high": NON_NEGATIVE,
        "delta": POSITIVE,
        "weight_decay": NON_NEGATIVE,
        "max_grad_norm": NON_NEGATIVE,
        "warmup_ratio": Range(low=0, high=1),
        "warmup_steps": NON_NEGATIVE,
        "adam_beta1": Range(low=0, high=1, high_open=True),
        "adam_beta2": Range(low=0, high=1, high_open=True),
        "adam_epsilon": NON_NEGATIVE,
        "logging_steps": POSITIVE,
        "save_steps": POSITIVE,
        "dataloader_num_workers": NON_NEGATIVE_INT,
    }


def check_numeric_options(training_args: Any) -> None:
    """``ValueError`` "<option> must be ..., got ..." for a numeric option that would fail after the model is
    loaded, crash, or train nothing (``--per_device_train_batch_size 0``, ``--learning_rate -1``, ``--temperature
    0``, ``--num_train_epochs 0`` without ``--max_steps``); called right after parsing, before anything is loaded."""
    for name, rule in _numeric_rules().items():
        rule.check(getattr(training_args, name, None), name)
    if training_args.max_steps == -1:
        epochs = training_args.num_train_epochs
        if POSITIVE.problem(epochs):
            raise ValueError(
                f"num_train_epochs {POSITIVE.problem(epochs)} (with max_steps unset, it sets the length of the run); "
                "set num_train_epochs > 0 or max_steps >= 1"
            )


def load_task_rows(task_args: TaskArguments, heldout: bool = False) -> list[Any]:
    """Rows of the configured dataset (built-in or user-provided), loaded through the task registry; ``heldout``:
    the held-out rows instead (``heldout_dataset`` / ``heldout_split`` / ``heldout_prompts``, seed 1; the training
    rows use seed 0)."""
    data = DataOptions(
        fields=FieldMap(prompt=task_args.prompt_field, answer=task_args.answer_field, id=task_args.id_field),
        tools_field=task_args.tools_field,
        config_name=task_args.dataset_config,
        on_error="skip" if task_args.skip_broken_rows else "raise",
        max_skip_fraction=task_args.max_skip_fraction,
        instruction=task_args.instruction,
    )
    if heldout:
        dataset = task_args.heldout_dataset or task_args.dataset
        return _task(task_args).load(
            dataset=dataset, split=task_args.heldout_split, limit=task_args.heldout_prompts, seed=HELDOUT_ROWS_SEED,
            data=data,
        )  # fmt: skip
    return _task(task_args).load(
        dataset=task_args.dataset, split=task_args.dataset_split, limit=task_args.dataset_limit, seed=0, data=data
    )


def _task(task_args: TaskArguments) -> Any:
    """The registered task ``task_args.task`` (``ValueError`` naming the trainable tasks if it is unknown)."""
    try:
        return get_task(task_args.task)
    except KeyError:
        raise ValueError(f"unknown task {task_args.task!r}; use one of {', '.join(list_tasks())}") from None


def build_rewards(task_args: TaskArguments, training_args: Any) -> tuple[list[Any], list[float]]:
    """Reward functions and weights of the task's named reward (and its optional format reward); rejects a graded
    reward with DiPO's binary mode (spec §6)."""
    spec = _task(task_args)
    choice = spec.reward(task_args.reward)
    funcs: list[Any] = [choice.make()]
    weights = [1.0]
    graded = not choice.binary
    if task_args.format_reward_weight and spec.format_reward is not None:
        funcs.append(spec.format_reward())
        weights.append(task_args.format_reward_weight)
        graded = True
    dipo_on = training_args.dipo_track  # DiPOConfig: DiPO runs (α > 0 or diagnostics requested)
    if graded and dipo_on and training_args.dipo_reward_mode != "graded":
        raise ValueError(
            "the configured reward is graded (not 0/1) but dipo_reward_mode='binary'; set --dipo_reward_mode graded "
            "(and --dipo_correct_threshold, e.g. 1.0 for the ToolRL reward: only exact calls count as correct)"
        )
    return funcs, weights


def resume_target(training_args: Any) -> str | None:
    """The checkpoint folder to resume from, or None: ``resume_from_checkpoint`` may be a folder (which must be a
    complete checkpoint) or ``true``/``latest`` (the newest *complete* ``checkpoint-N`` in ``output_dir``; a warning
    names each newer incomplete one it skips). Raises ``ValueError`` naming the folder(s) if there is nothing
    complete to resume from (see :mod:`dipo.integrations.trl.checkpoints`)."""
    from dipo.integrations.trl.checkpoints import (
        checkpoint_problem,
        newest_complete_checkpoint,
        no_complete_checkpoint_message,
    )

    value = training_args.resume_from_checkpoint
    if value is None or value is False:
        return None
    text = str(value).strip()
    if text.lower() in ("", "false", "no", "0", "none"):
        return None
    needs_state = training_args.dipo_track and not training_args.dipo_resume_empty_queue
    if value is True or text.lower() in ("true", "yes", "1", "latest", "last"):
        output_dir = training_args.output_dir
        found, skipped = newest_complete_checkpoint(output_dir, needs_state)
        if found is None:
            fresh = "give the output_dir of the run to resume, or start anew with --overwrite_output_dir"
            raise ValueError(
                f"resume_from_checkpoint={text}: {no_complete_checkpoint_message(output_dir, skipped, fresh)}"
            )
        for folder, problem in skipped:
            logger.warning("skipping incomplete checkpoint %s: it %s", folder, problem)
        return found
    path = os.path.expanduser(text)
    if not os.path.isdir(path):
        raise ValueError(
            f"resume_from_checkpoint: checkpoint folder {text!r} does not exist; give a checkpoint-N folder or 'true' "
            "(the newest complete one in output_dir)"
        )
    problem = checkpoint_problem(path, needs_state)
    if problem is not None:
        raise ValueError(
            f"resume_from_checkpoint: {text!r} is not a complete training checkpoint: it {problem}; give a complete "
            "checkpoint-N folder (e.g. an earlier one) or 'true' (the newest complete one in output_dir)"
        )
    return path


#: Files that show that a folder holds a trained model (``save_model`` / ``save_state`` output).
MODEL_FILES = (
    "config.json",
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "adapter_config.json",
    "adapter_model.safetensors",
    "trainer_state.json",
)


def check_output_dir(training_args: Any, task_args: TaskArguments, resume: str | None) -> None:
    """The output-folder guard (:func:`dipo.fileio.check_output_dir`) for a training run: an ``output_dir`` that
    holds checkpoints or a trained model is refused unless the run resumes one of its checkpoints or
    ``overwrite_output_dir`` is set (then it only warns about checkpoints that the new run will not replace);
    resuming a checkpoint of another folder into an ``output_dir`` that holds a run is refused too. Creates the
    folder and checks that it is writable."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    out = Path(training_args.output_dir)
    resuming_here = resume is not None and out.is_dir() and Path(resume).resolve().parent == out.resolve()
    found = guard(
        out,
        (f"{PREFIX_CHECKPOINT_DIR}-*", *MODEL_FILES),
        what="a training run",
        overwrite=task_args.overwrite_output_dir,
        overwrite_flag="--overwrite_output_dir",
        resume=resuming_here,
        resume_hint="resume it with --resume_from_checkpoint true",
    )
    checkpoints = [name for name in found if name.startswith(PREFIX_CHECKPOINT_DIR)]
    if checkpoints and task_args.overwrite_output_dir and not resuming_here:
        logger.warning("output_dir %s: overwriting an earlier run; its %s stay", out, ", ".join(checkpoints))


@dataclass
class Setup:
    """Everything a checked ``dipo train`` run needs: the parsed options, the checkpoint it resumes (or None), the
    training and held-out rows, the built trainer and the time the setup began."""

    task_args: TaskArguments
    training_args: Any
    model_args: Any
    resume: str | None
    rows: list[Any]
    heldout_rows: list[Any]
    reward: Any  # the task's reward function (held-out scoring); a format reward, if any, is not part of it
    trainer: Any
    started: float


def prepare(config: str | None, argv: list[str]) -> Setup:
    """Parse and check the options, load the rows (held-out ones too) and build the trainer; every bad input raises
    one of ``dipo.cli.errors.INPUT_ERRORS`` before the model is loaded or a file is written."""
    started = time.perf_counter()
    if config and not os.path.isfile(config):
        what = "is a folder" if os.path.isdir(config) else "does not exist"
        raise FileNotFoundError(f"config file {config!r} {what}; give a YAML file of options")
    if config:
        read_config(config)  # checked before TRL reads it: errors name the file and line
    task_args, training_args, model_args = parse(argv)
    check_numeric_options(training_args)
    if not model_args.model_name_or_path:
        raise ValueError("no model: set model_name_or_path (a folder, a Hub id or 'smollm2-135m-instruct')")
    check_model_source(model_args.model_name_or_path, "model_name_or_path")
    resume = resume_target(training_args)
    rows = load_task_rows(task_args)
    if not rows:
        raise ValueError(f"dataset {task_args.dataset!r} gave no rows")
    heldout_rows = load_task_rows(task_args, heldout=True) if task_args.heldout_prompts else []
    if task_args.heldout_prompts and not heldout_rows:
        raise ValueError(f"heldout_split {task_args.heldout_split!r} of the task's dataset gave no held-out rows")
    reward_funcs, reward_weights = build_rewards(task_args, training_args)
    check_output_dir(training_args, task_args, resume)
    if training_args.reward_weights is None:
        training_args.reward_weights = reward_weights
    if task_args.threads is not None:
        import torch

        torch.set_num_threads(task_args.threads)
    try:
        trainer = build_trainer(task_args, training_args, model_args, rows, reward_funcs)
    except OSError as err:
        raise model_load_error(model_args.model_name_or_path, "model_name_or_path", err) from err
    return Setup(task_args, training_args, model_args, resume, rows, heldout_rows, reward_funcs[0], trainer, started)


def run(args: argparse.Namespace) -> int:
    argv = list(args.trl_args)
    if "--help-all" in argv:
        build_parser().print_help()
        return 0
    if argv[:1] == ["--summarize"]:
        return summarize_runs(argv[1:])
    if args.config:
        argv = ["--config", args.config, *argv]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        setup = prepare(args.config, argv)
    except INPUT_ERRORS as err:
        logger.debug("dipo train: setup failed", exc_info=True)
        print(f"dipo train: {describe_error(err)}", file=sys.stderr)
        return 2
    try:
        train_and_report(setup)
    except OSError as err:  # a full disk or a folder made read-only during the run; bugs keep their traceback
        logger.debug("dipo train: I/O error", exc_info=True)
        print(f"dipo train: {describe_error(err)}", file=sys.stderr)
        return 1
    logger.info("saved to %s", setup.training_args.output_dir)
    return 0


def train_and_report(setup: Setup) -> None:
    """Measure held-out accuracy before (if asked), train, save the model and trainer state, measure held-out
    accuracy after, and write ``<output_dir>/train_summary.json`` (:mod:`dipo.cli.train_report`)."""
    import torch

    task_args, training_args, trainer = setup.task_args, setup.training_args, setup.trainer
    logger.info(
        "training %s on %d rows of %s (task %s, preset %s)%s",
        setup.model_args.model_name_or_path,
        len(setup.rows),
        task_args.dataset,
        task_args.task,
        training_args.preset,
        f", resuming from {setup.resume}" if setup.resume else "",
    )
    summary = run_summary(task_args, training_args, setup.model_args, torch.get_num_threads())

    def heldout(when: str) -> None:
        metrics = heldout_accuracy(
            trainer.model, trainer.processing_class, setup.heldout_rows, setup.reward, training_args,
            task_args.heldout_k, task_args.heldout_batch_size,
        )  # fmt: skip
        summary[f"heldout_{when}"] = metrics
        logger.info("held-out %s: mean@%d = %.2f", when, task_args.heldout_k, metrics[f"mean@{task_args.heldout_k}"])

    if setup.heldout_rows and task_args.heldout_before:
        heldout("before")
    train_start = time.perf_counter()
    trainer.train(resume_from_checkpoint=setup.resume)
    summary["train_seconds"] = time.perf_counter() - train_start
    trainer.save_model(training_args.output_dir)
    trainer.save_state()  # trainer_state.json with the logged rewards and dipo/* diagnostics
    if setup.heldout_rows:
        heldout("after")
    summary["log_history"] = trainer.state.log_history
    summary["total_seconds"] = time.perf_counter() - setup.started
    logger.info("wrote %s", write_summary(training_args.output_dir, summary))


def summarize_runs(run_dirs: list[str]) -> int:
    """``dipo train --summarize DIR...``: print the markdown tables of finished runs (exit 2 naming a folder without
    a summary)."""
    if not run_dirs or any(d.startswith("--") for d in run_dirs):
        print("dipo train: --summarize takes output folders of finished runs only: --summarize DIR [DIR ...]",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        print(summarize(run_dirs), end="")
    except INPUT_ERRORS as err:
        print(f"dipo train: {describe_error(err)}", file=sys.stderr)
        return 2
    return 0


def plain_text_rows(rows: list[Any]) -> list[Any]:
    """Rows whose chat-message prompts are rendered as plain text (the message contents, as ``dipo eval`` does for a
    tokenizer without a chat template); string prompts are kept."""
    from dipo.evaluation.generation import plain_prompt

    return [row if isinstance(row.prompt, str) else replace(row, prompt=plain_prompt(row.prompt)) for row in rows]


def build_trainer(task_args: TaskArguments, training_args: Any, model_args: Any, rows: list[Any], reward_funcs: Any):
    """Load the model and tokenizer, turn the rows into a ``datasets.Dataset`` and build the ``DiPOTrainer``."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dipo import DiPOTrainer

    path = resolve_model(model_args.model_name_or_path)
    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    model = AutoModelForCausalLM.from_pretrained(
        path, revision=model_args.model_revision, dtype=dtype, attn_implementation=model_args.attn_implementation
    )
    tokenizer = AutoTokenizer.from_pretrained(path, revision=model_args.model_revision)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None) and any(not isinstance(row.prompt, str) for row in rows):
        logger.info("the tokenizer of %s has no chat template: prompts are given as plain text", path)
        rows = plain_text_rows(rows)
    peft_config = None
    if model_args.use_peft:
        from trl import get_peft_config

        peft_config = get_peft_config(model_args)
    dataset = datasets.Dataset.from_list([row.to_dict() for row in rows])
    return DiPOTrainer(
        model=model,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
