"""Math, parsing: the final answer of a completion (``\\boxed{}``, ``#### N``, ``Answer: X``, last number) and the
gold answers of GSM8K and MATH solutions."""

from __future__ import annotations

import re
from dataclasses import dataclass


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
