"""Math, scoring: math-verify comparisons bounded in every thread (a persistent worker process with a time and
memory limit, :data:`VERIFY_TIMEOUT_S`), answer equivalence and completion verdicts."""

from __future__ import annotations

import atexit
import importlib.util
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from dipo.tasks.data import (
    completion_text,
)
from dipo.tasks.math.extract import extract_answer

# Imported inside functions: math_verify (optional package); resource and ctypes (POSIX / Linux only), in the worker
# process; multiprocessing.connection (50 ms), only when a worker starts (`dipo --help` imports this module).

logger = logging.getLogger(__name__)


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
#: Wall-clock budget (seconds) of one call (one batch of comparisons, e.g. one reward call): VERIFY_CALL_BUDGET_S plus
#: VERIFY_CALL_BUDGET_PER_PAIR_S per comparison in the batch. Comparisons still unanswered when it is spent count as
#: wrong (reward 0), are counted (``over_budget`` in :func:`verify_stats`) and logged, so that a batch of slow answers
#: (16 factorials that each run into the 2 s step timeout) cannot hold a training step for minutes. Starting the
#: worker process is not counted.
VERIFY_CALL_BUDGET_S = 6.0
VERIFY_CALL_BUDGET_PER_PAIR_S = 0.1
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


def _call_budget(num_pairs: int) -> float:
    """Seconds one batch of ``num_pairs`` comparisons may take (VERIFY_CALL_BUDGET_S and _PER_PAIR_S)."""
    return VERIFY_CALL_BUDGET_S + VERIFY_CALL_BUDGET_PER_PAIR_S * num_pairs


def _report_over_budget(unanswered: int, total: int) -> None:
    """Count ``unanswered`` comparisons of a batch of ``total`` left when the call's budget was spent; log it."""
    n = _count("over_budget", unanswered)
    logger.warning(
        "math-verify: the batch of %d comparisons spent its %.1f s budget; %d unanswered counted as wrong "
        "[over_budget: %d so far]", total, _call_budget(total), unanswered, n
    )  # fmt: skip


def verify_stats() -> dict[str, int]:
    """Counters of this process's bounded verification: ``compared`` (comparisons sent to the worker),
    ``timeouts`` (past VERIFY_TIMEOUT_S: worker killed), ``step_timeouts`` (math-verify's own VERIFY_STEP_TIMEOUT_S
    ended a parse or verification), ``crashes`` (the worker died twice on one comparison), ``errors`` (math-verify
    raised), ``over_budget`` (left unanswered when a batch spent its budget, VERIFY_CALL_BUDGET_S) — all five
    counted as wrong answers —, ``screened`` (answers too long or building huge numbers: compared
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


def _worker_env() -> dict[str, str]:
    """The worker's environment: ours, with the folder that holds the ``dipo`` package (``src/`` of a checkout) first
    on ``PYTHONPATH`` (no ``sys.path`` edits), so that a source checkout that is not installed verifies with its own
    code. The folder is this module's ancestor one level up per dot of ``dipo.tasks.math.verify``."""
    src = str(Path(__file__).resolve().parents[__name__.count(".")])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)}


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

        env = _worker_env()
        code = "import sys; from dipo.tasks.math.verify import _verify_worker_main; _verify_worker_main(sys.argv[1:])"
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
                env=env,
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
        time (VERIFY_TIMEOUT_S), the call's budget (:func:`_call_budget`) was spent, or the worker died twice on
        it."""
        with self._lock:
            if self._owner_pid != os.getpid():  # forked child: the pipes belong to the parent's worker
                self._proc = self._requests = self._results = None
            codes: list[int | None] = []
            died_once = False
            deadline = time.monotonic() + _call_budget(len(pairs))
            while len(codes) < len(pairs):
                if self._proc is None:
                    started = time.monotonic()
                    self._start()
                    deadline += time.monotonic() - started  # starting the worker is not the answers' time
                pending = pairs[len(codes) :]
                try:
                    self._requests.send(pending)
                    for gold, pred in pending:
                        wait = min(VERIFY_TIMEOUT_S, deadline - time.monotonic())
                        if not self._results.poll(max(wait, 0.0)):
                            self._stop()
                            if wait < VERIFY_TIMEOUT_S:  # the call's budget is spent: the rest count as wrong
                                _report_over_budget(len(pairs) - len(codes), len(pairs))
                                return codes + [None] * (len(pairs) - len(codes))
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
    deadline = time.monotonic() + _call_budget(len(pairs))
    codes: list[int | None] = []
    for gold, pred in pairs:
        if time.monotonic() >= deadline:
            _report_over_budget(len(pairs) - len(codes), len(pairs))
            return codes + [None] * (len(pairs) - len(codes))
        codes.append(_compare(gold, pred))
    return codes


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
