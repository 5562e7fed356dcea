"""Decimal numbers in the agent's arguments, read the way the C tools read them.

C's isdigit() knows only ASCII 0-9, where Python's str.isdigit() also takes "²" (which int() then
rejects) and "٣" (which int() reads as 3), and int() raises past 4,300 digits. Argument parsers
check with these instead, so an odd or gigantic number takes the tool's ordinary error path.
"""

from __future__ import annotations

# More digits than any C long holds (19): the value is out of range for every tool.
MAX_DIGITS = 18


def is_digits(text: str) -> bool:
    """Whether `text` is one or more ASCII digits."""
    return text.isascii() and text.isdigit()


def to_int(text: str, max_digits: int = MAX_DIGITS) -> int | None:
    """The value of `text` if it is ASCII digits with at most `max_digits` significant ones, else None."""
    if not is_digits(text) or len(text.lstrip("0")) > max_digits:
        return None
    return int(text)
