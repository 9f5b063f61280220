"""Numbers from the API are data: whether a `deduction_credit` may be used as a charge.

Owns `charge`: a figure that is negative, zero for a paid item, fractional, not finite,
not a number or absurdly large (over `MAX_TASK_CREDITS`) is not used; the estimate stays
held (budget.py) and the caller records what the API said (`Charge.problem`). Pure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: no single task costs more than this; a larger `deduction_credit` is a broken answer
MAX_TASK_CREDITS = 100_000


@dataclass(frozen=True, slots=True)
class Charge:
    """A `deduction_credit` as the budget may use it."""

    credits: int | None   #: the charge to record; None keeps the estimate held
    problem: str | None   #: why the API's figure was not used (None when it was, or absent)


def _shown(value: int | float) -> str:
    """A number from the API as a short text. `:g` converts an int to a float, which
    raises OverflowError for a JSON integer past a float's range."""
    text = str(value) if isinstance(value, int) else f"{value:g}"
    return text if len(text) <= 24 else f"{text[:12]}…({len(text)} digits)"


def charge(value: object, estimate: int) -> Charge:
    """Validate a `deduction_credit` from the API against the task's estimate.

    A figure that cannot be a real charge never lowers what is held and never raises: the
    estimate stays held and `problem` says what was wrong, for the caller to record.
    """
    if value is None:
        return Charge(None, None)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return Charge(None, f"not a number ({str(value)[:40]!r})")
    if isinstance(value, float) and not math.isfinite(value):
        return Charge(None, f"not finite ({value})")
    if value < 0:
        return Charge(None, f"negative ({_shown(value)})")
    if value > MAX_TASK_CREDITS:
        return Charge(None, f"absurdly large ({_shown(value)})")
    if value != int(value):
        return Charge(None, f"fractional ({_shown(value)})")
    if value == 0 and estimate > 0:
        return Charge(None, "zero for a paid task")
    return Charge(int(value), None)
