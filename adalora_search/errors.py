"""User-facing errors: anything the user can fix by editing input ends in exit code 2."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the user's input, located as precisely as we can."""

    field: str
    value: object
    message: str
    line: int | None = None

    def render(self, source: str | None = None) -> str:
        where = source or "<input>"
        if self.line is not None:
            where = f"{where}:{self.line}"
        if not self.field and self.value is None:  # the file as a whole (YAML syntax, nesting)
            return f"{where}: {self.message}"
        return f"{where}: {self.field or '<top level>'} = {_short(self.value)}: {self.message}"


class UserError(Exception):
    """An error caused by the user's input; the CLI prints it and exits with code 2."""

    def __init__(self, message: str, problems: list[Problem] | None = None, source: str | None = None):
        super().__init__(message)
        self.message = message
        self.problems = problems or []
        self.source = source

    def __str__(self) -> str:
        lines = [self.message]
        lines += ["  - " + p.render(self.source) for p in self.problems]
        return "\n".join(lines)


class DataRowError(UserError):
    """A ``UserError`` about one row of a source split; ``{row}`` in the message becomes where that row is
    (``reviews.csv line 5``, once the data loader knows the file; else ``row 4 of the train split``).
    """

    def __init__(self, row: int, message: str, split: str):
        super().__init__(message.replace("{row}", f"row {row + 1} of the {split} split (counting from 1)"))
        self.row, self.template = row, message

    def at(self, where: str) -> UserError:
        """The same error, the row named by ``where``."""
        return UserError(self.template.replace("{row}", where))


class TrialFailure(Exception):
    """A trial could not finish (NaN loss, out of memory, bad sample): recorded, the study goes on."""


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class RepeatedFailure(UserError):
    """The study's last trials all failed: the cause repeats, so the worker stops (exit code 2)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during trial ``trial`` (None: between trials); that trial was re-queued."""

    def __init__(self, trial: int | None = None):
        super().__init__(trial)
        self.trial = trial

    def message(self) -> str:
        """What the command line says: which trial was re-queued, and how to resume."""
        if self.trial is None:
            return "interrupted; completed trials are stored; run again to resume"
        return f"interrupted; trial {self.trial} re-queued; run again to resume"
