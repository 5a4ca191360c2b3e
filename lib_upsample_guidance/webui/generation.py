"""Per-generation guard shared by the host adapters: never lose a user's generation.

Once anything in the guidance path fails for a generation, guidance stays off for the rest of it, the step
that failed keeps the host's own prediction, and ONE console warning says why. `ran` records that guidance
changed at least one step (the infotext is written only then). One GuardState is made per generation and
kept on the processing object, never in module globals.
"""

from __future__ import annotations

from dataclasses import dataclass

from .settings import WARNING_PREFIX

__all__ = ["GuardState", "UnsupportedInput", "describe", "WARNING_PREFIX"]


class UnsupportedInput(ValueError):
    """An input a host adapter cannot guide; its message is shown to the user as is."""


def describe(exc: BaseException) -> str:
    """A one-line reason for the console: the message of UnsupportedInput, else 'Type: first line'."""
    if isinstance(exc, UnsupportedInput):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(kw_only=True)
class GuardState:
    """off_reason: None while guidance is allowed; warnings: console warnings printed (at most 1);
    ran: guidance changed at least one step of this generation."""

    off_reason: str | None = None
    warnings: int = 0
    ran: bool = False

    @property
    def off(self) -> bool:
        return self.off_reason is not None

    def turn_off(self, why: str) -> None:
        """Guidance off for the rest of this generation, with ONE console warning (the first reason)."""
        if self.off_reason is not None:
            return
        self.off_reason = why
        self.warnings += 1
        print(f"{WARNING_PREFIX} guidance turned off for this image: {why} (it is finished without guidance)")
