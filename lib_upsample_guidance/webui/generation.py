"""Per-generation guard shared by the host adapters: never lose a user's generation.

Once anything in the guidance path fails for a generation, guidance stays off for the rest of it, the step
that failed keeps the host's own prediction, and ONE console warning says why. `ran` records that guidance
changed at least one step (the infotext is written only then). One GuardState is made per generation and
kept on the processing object, never in module globals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .settings import WARNING_PREFIX

__all__ = ["GuardState", "UnsupportedInput", "describe", "images_affected", "WARNING_PREFIX"]


class UnsupportedInput(ValueError):
    """An input a host adapter cannot guide; its message is shown to the user as is."""


def describe(exc: BaseException) -> str:
    """A one-line reason for the console: the message of UnsupportedInput, else 'Type: first line'."""
    if isinstance(exc, UnsupportedInput):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def images_affected(p: Any) -> str:
    """Which images a failure at this point leaves unguided, in words, from the processing object's batch
    layout (p.batch_size images per batch, p.n_iter batches, p.iteration = the current batch, 0-based)."""

    def count(name: str) -> int:
        value = getattr(p, name, 1)
        return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1

    batch_size, n_iter = count("batch_size"), count("n_iter")
    iteration = getattr(p, "iteration", 0)
    iteration = iteration if isinstance(iteration, int) and 0 <= iteration < n_iter else 0
    if batch_size == 1 and n_iter == 1:
        return "it is finished without guidance"
    this = "this image is" if batch_size == 1 else f"the {batch_size} images of this batch are"
    text = f"{this} finished without guidance"
    later_batches = n_iter - iteration - 1
    if later_batches:
        later = later_batches * batch_size
        batches = f"batch {n_iter}" if later_batches == 1 else f"batches {iteration + 2}-{n_iter}"
        verb = "is" if later == 1 else "are"
        text += f", and the {later} later image{'' if later == 1 else 's'} ({batches} of {n_iter}) {verb} not guided"
    return text


@dataclass(kw_only=True)
class GuardState:
    """off_reason: None while guidance is allowed; warnings: console warnings printed (at most 1 for a
    failure, plus at most one per kind of warn_once notice); ran: guidance changed at least one step of the
    current batch (the adapters write the infotext then; the script clears it and the keys per batch)."""

    off_reason: str | None = None
    warnings: int = 0
    ran: bool = False
    notices: set[str] = field(default_factory=set)

    @property
    def off(self) -> bool:
        return self.off_reason is not None

    def turn_off(self, why: str, p: Any = None) -> None:
        """Guidance off for the rest of this generation, with ONE console warning (the first reason) that says
        which images are left unguided (p: the processing object, for its batch layout)."""
        if self.off_reason is not None:
            return
        self.off_reason = why
        self.warnings += 1
        if p is None:
            print(
                f"{WARNING_PREFIX} guidance turned off for this image: {why} (it is finished without guidance)"
            )
            return
        scope = images_affected(p)
        head = "for this image" if scope.startswith("it ") else "for the rest of this job"
        print(f"{WARNING_PREFIX} guidance turned off {head}: {why} ({scope})")

    def warn_once(self, key: str, message: str) -> None:
        """One console notice per `key` per generation; guidance goes on."""
        if key in self.notices:
            return
        self.notices.add(key)
        self.warnings += 1
        print(f"{WARNING_PREFIX} {message}")
