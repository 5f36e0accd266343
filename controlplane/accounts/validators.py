"""Password rules beyond Django's built-in validators (config/settings/base.py AUTH_PASSWORD_VALIDATORS).

Django's validators pass `aaaaaaaaaaaa` or `abcabcabcabc`: twelve characters, not numeric, not in the
common list. Such passwords are among the first a guesser tries, whatever their length.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError


def _follows_a_pattern(password: str) -> bool:
    """True when the steps between neighbouring characters repeat with a period of at most half the length.

    That covers one character repeated (`aaaa`: steps 0, 0, 0), a repeated word (`abcabc`: 1, 1, -2, 1, 1),
    runs (`abcdefgh`, `13579bdf`: one constant step) and their mixes, with a cut-off last repetition
    too. The whole password is fixed by its first characters, so it holds no more guesses than those.
    """
    steps = [ord(b) - ord(a) for a, b in zip(password, password[1:], strict=False)]
    for period in range(1, len(password) // 2 + 1):
        if all(steps[i] == steps[i + period] for i in range(len(steps) - period)):
            return True
    return False


class PatternPasswordValidator:
    """Refuse a password made of few distinct characters or of one repeated pattern."""

    def __init__(self, min_distinct: int = 6) -> None:
        self.min_distinct = min_distinct

    def validate(self, password: str, user: Any = None) -> None:
        if len(set(password)) < self.min_distinct:
            raise ValidationError(
                f"This password has too few different characters: use at least {self.min_distinct}.",
                code="password_too_few_distinct",
            )
        if len(password) >= 2 and _follows_a_pattern(password):
            raise ValidationError(
                "This password is one repeated pattern (like “abcabcabc” or “abcdefgh”).",
                code="password_repeated_pattern",
            )

    def get_help_text(self) -> str:
        return (
            f"Your password must contain at least {self.min_distinct} different characters "
            "and must not be one repeated pattern."
        )
