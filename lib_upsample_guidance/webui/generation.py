"""Per-generation guard shared by the host adapters: never lose a user's generation.

Once anything in the guidance path fails for a generation, guidance stays off for the rest of it, the step
that failed keeps the host's own prediction, and ONE console warning says why. `ran` records that guidance
changed at least one step (the infotext is written only then). One GuardState is made per generation and
kept on the processing object, never in module globals.

For the infotext (webui/forecast.py) the state also records, per batch of the generation (A1111's n_iter),
whether guidance changed a step of that batch (`ran`, set by :meth:`GuardState.mark_guided`) and where
it was turned off (`stop_level`, `stop_hires`, `stopped_in_batch`), and holds the forecast made before
sampling.
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
    current batch (reset by new_batch; the infotext keys follow it, webui/forecast.py); stop_level: the host's
    noise level (sigma, or t for DDIM-type samplers) of the model call that failed, None when unknown or not
    stopped; stop_hires: it failed in the hires. fix pass; stopped_in_batch: it failed in the current batch;
    forecast: the webui.forecast.Forecast of this generation (None: unknown)."""

    off_reason: str | None = None
    warnings: int = 0
    ran: bool = False
    notices: set[str] = field(default_factory=set)
    stop_level: float | None = None
    stop_hires: bool = False
    stopped_in_batch: bool = False
    forecast: Any = None
    forecast_done: bool = False

    def mark_guided(self) -> bool:
        """Guidance changed a step; True the first time in the current batch (write the infotext then)."""
        first = not self.ran
        self.ran = True
        return first

    def new_batch(self) -> None:
        """A new batch of the same generation starts (the per-batch facts are reset)."""
        self.ran = False
        self.stopped_in_batch = False

    @property
    def off(self) -> bool:
        return self.off_reason is not None

    def turn_off(self, why: str, p: Any = None, *, level: Any = None, hires: bool = False) -> None:
        """Guidance off for the rest of this generation, with ONE console warning (the first reason) that says
        which images are left unguided (p: the processing object, for its batch layout).

        level: the noise level(s) of the model call that failed (the largest is kept), if known; hires: the
        failure is in the hires. fix pass. Both only serve the infotext ("UG stopped", webui/forecast.py).
        """
        if self.off_reason is not None:
            return
        self.off_reason = why
        self.stop_level = _largest(level)
        self.stop_hires = bool(hires)
        self.stopped_in_batch = True
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


def _largest(level: Any) -> float | None:
    """The largest value of a scalar / tensor / sequence of noise levels as a float, None if unreadable."""
    if level is None:
        return None
    try:
        values = level.detach().reshape(-1).tolist() if hasattr(level, "detach") else level
        if isinstance(values, (int, float)):
            return float(values)
        return float(max(float(v) for v in values))
    except Exception:  # only informational
        return None
