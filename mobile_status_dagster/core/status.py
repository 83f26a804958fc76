"""The provider's answer vocabulary: status codes and operator codes."""

from __future__ import annotations

import enum


class Status(enum.IntEnum):
    """A number's status as the provider reports it in the ``check`` field.

    The integer value is the provider's code; ``label`` is the stable name used in
    tables and metadata; ``billed`` says whether an answer with this status is charged.
    """

    UNKNOWN = 0
    ONLINE = 1
    POWERED_OFF = 2
    UNAVAILABLE = 3
    VACANT = 4
    CANCELLED = 5

    @property
    def label(self) -> str:
        """Lower-case name, e.g. ``"powered_off"``."""
        return self.name.lower()

    @property
    def billed(self) -> bool:
        """Every definitive answer is charged; ``UNKNOWN`` is not."""
        return self is not Status.UNKNOWN

    @classmethod
    def from_label(cls, label: str) -> Status:
        """The status named ``label`` (e.g. ``"online"``); ValueError names the choices."""
        try:
            return cls[label.strip().upper()]
        except KeyError:
            choices = ", ".join(s.label for s in cls)
            raise ValueError(f"unknown status {label!r}; expected one of: {choices}") from None


SERVING_OPERATORS: frozenset[str] = frozenset({"CM", "CU", "CT"})
"""Operator codes the provider reports as the serving network."""
