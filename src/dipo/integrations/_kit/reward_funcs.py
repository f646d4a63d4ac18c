"""Reward functions are user code and their output is untrusted input: :func:`checked_reward_func` wraps one so that a
bad return value raises a clear error naming it (a framework would fail later with an anonymous tensor-conversion
error), sync and async alike."""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

from torch import Tensor


def is_async_callable(func: Any) -> bool:
    """Whether calling ``func`` (a function, a ``functools.partial`` of one, or an object) returns a coroutine."""
    while isinstance(func, functools.partial):
        func = func.func
    call = type(func).__call__ if not inspect.isroutine(func) else None
    return inspect.iscoroutinefunction(func) or (call is not None and inspect.iscoroutinefunction(call))


def _is_array(output: Any) -> bool:
    """A NumPy-like array (sized and indexable, not a one-shot iterator), recognised without importing NumPy."""
    return hasattr(type(output), "__len__") and hasattr(type(output), "__getitem__")


def check_reward_output(name: str, output: Any, prefix: str = "") -> Any:
    """A reward function's return value, checked: a sequence with one real number (or None) per completion.

    A generator is read once and returned as a list; ``prefix`` starts the ``TypeError``'s message (e.g. the
    adapter's class, ``"DiPOTrainer: "``)."""
    if isinstance(output, (str, bytes, dict)) or not isinstance(output, (Sequence, Tensor, Iterable)):
        raise TypeError(
            f"{prefix}reward function {name!r} returned a {type(output).__name__}; a reward function must return a "
            "list with one float (or None to skip) per completion."
        )
    if not (isinstance(output, (Sequence, Tensor)) or _is_array(output)):  # a generator: read it once, as a list
        output = list(output)
    for index, value in enumerate(output):
        if isinstance(value, Tensor):
            ok = value.numel() == 1 and not value.is_complex()
        else:  # None, Python/NumPy numbers and bools (NumPy's bool_ is not a numbers.Real)
            ok = value is None or isinstance(value, numbers.Real) or str(getattr(value, "dtype", None)) == "bool"
        if not ok:
            raise TypeError(
                f"{prefix}reward function {name!r} returned {value!r} ({type(value).__name__}) for completion "
                f"{index}; a reward function must return one float (or None to skip) per completion, e.g. "
                "[float(ok) for ok in checks]."
            )
    return output


def checked_reward_func(func: Any, name: str, prefix: str = "") -> Any:
    """``func`` wrapped by :func:`check_reward_output` (sync stays sync, async stays async); the wrapper is named
    ``name``, keeps the docstring and the original as ``dipo_reward_func``; wrapping twice changes nothing."""
    if getattr(func, "_dipo_checked", False):
        return func
    if is_async_callable(func):

        async def checked(*args: Any, **kwargs: Any) -> Any:
            return check_reward_output(name, await func(*args, **kwargs), prefix)
    else:

        def checked(*args: Any, **kwargs: Any) -> Any:
            return check_reward_output(name, func(*args, **kwargs), prefix)

    checked.__name__ = checked.__qualname__ = name
    checked.__doc__ = getattr(func, "__doc__", None)
    checked._dipo_checked = True  # type: ignore[attr-defined]
    checked.dipo_reward_func = func  # type: ignore[attr-defined]
    return checked
