"""Who did something: a user, a management command, a task or the system itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Actor:
    label: str
    user_id: int | None = None

    @classmethod
    def from_user(cls, user: Any) -> Actor:
        return cls(label=f"user:{user.get_username()}", user_id=user.pk)

    @classmethod
    def command(cls, name: str) -> Actor:
        return cls(label=f"command:{name}")

    @classmethod
    def task(cls, name: str) -> Actor:
        return cls(label=f"task:{name}")

    @classmethod
    def system(cls, what: str) -> Actor:
        return cls(label=f"system:{what}")
