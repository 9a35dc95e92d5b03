"""Errors that the CLI turns into one readable message and an exit code."""
from __future__ import annotations


class TekapbenchError(Exception):
    """Base class: the message is shown to the user as is, without a traceback."""

    exit_code = 1


class UsageError(TekapbenchError):
    """Bad input from the user (suite file, command line, missing data): exit code 2."""

    exit_code = 2


class ConfigError(UsageError):
    """One or more problems in a suite file, each naming the key path and what is allowed."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = [f"{source}: invalid suite ({len(problems)} problem{'s' if len(problems) > 1 else ''})"]
        lines += [f"  {key or '<top level>'}: {msg}" for key, msg in problems]
        super().__init__("\n".join(lines))


class DataNotFoundError(UsageError):
    """A dataset is not where it should be and may not be downloaded."""


class UnsafeFileError(UsageError):
    """A file that only a pickle of arbitrary objects could read (a checkpoint or dataset file asking for
    classes or functions beyond plain data): refused, never unpickled, as reading it could run any code.
    ``asks_for``: the global it names, when it names one (a crafted file, not merely a damaged one)."""

    def __init__(self, message: str, asks_for: str | None = None):
        super().__init__(message)
        self.asks_for = asks_for


class TrainingDivergedError(TekapbenchError):
    """The loss became NaN or infinite: training stops instead of going on with garbage."""


class ClaimLostError(TekapbenchError):
    """Another process took over a run this one was working on (its heartbeat had stopped too long)."""


class Interrupted(BaseException):
    """SIGTERM (Slurm preemption, scancel, kill): stop like Ctrl-C; the last epoch checkpoint is kept."""


def validation_problems(exc, whole: str = "value") -> str:
    """A pydantic ValidationError as one line: ``key.path: message; ...`` (``whole`` when the problem is
    the value itself, not one of its keys)."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or whole}: {e['msg']}" for e in exc.errors())
