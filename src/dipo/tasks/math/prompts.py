"""Math, prompts: the instruction and the chat (or plain-text) prompt asking for the final answer in ``\\boxed{}``."""

from __future__ import annotations

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


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
