"""Bad input at the command line ends with one line, ``error: <what is wrong with which file>``, and exit code 1.

The project's user-facing errors (a bad audio file, corpus, manifest, TextGrid, model config, checkpoint, ...)
already carry a message naming the file and the problem; a Python traceback adds nothing for the user and
hides that line. :func:`user_errors` wraps an absl ``main`` so that those errors, and missing/unreadable
files (``OSError`` with a file name), print that line on stderr and exit with status 1; any other exception
is a bug and keeps its traceback. Every CLI entry point applies it once: ``jaxneurons`` (``cli.run``),
``jaxneurons-convert``, ``python -m jaxneurons.data.readers`` and ``python -m jaxneurons.data.synth``.

A bad flag value (``--on_error=bogus``) is found by absl before ``main`` runs; :func:`parse_flags`, passed as
``app.run(..., flags_parser=parse_flags)``, reports it the same way (absl's own parser prints two ``FATAL`` lines).

Error types are listed by qualified name (no import of the modules defining them is needed here); a
component with its own user-facing error type adds it with :func:`register_user_error`.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any


class SettingError(ValueError):
    """A setting (argument, flag, option) whose value cannot work; the message names the setting and the choices.

    For options validated in library code (a ``ValueError`` there is a traceback at the CLI, this is one line)."""


# Qualified names of the exception classes whose message is meant for the user.
USER_ERROR_NAMES: set[str] = {
    "jaxneurons.errors.SettingError",
    "jaxneurons.data.audio.AudioError",
    "jaxneurons.data.readers.CorpusError",
    "jaxneurons.data.manifest.ManifestError",
    "jaxneurons.data.textgrid.TextGridError",
    "jaxneurons.data.phones.UnknownPhoneError",
    "jaxneurons.data.espeak.EspeakError",
    "jaxneurons.models.config.ConfigError",
    "jaxneurons.pruning.select.PruningError",
    "jaxneurons.probes.splits.SplitError",
    "jaxneurons.interventions.sets.InterventionError",
    "checkpoints_convert.hf_weights.CheckpointError",
    "checkpoints_convert.export_hf.ExportError",
}
# OSErrors a user causes by naming a wrong path; they carry the file name.
_PATH_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, FileExistsError)


def register_user_error(cls: type[BaseException]) -> type[BaseException]:
    """Mark ``cls`` (and its subclasses) as user-facing; usable as a class decorator."""
    USER_ERROR_NAMES.add(f"{cls.__module__}.{cls.__qualname__}")
    return cls


def is_user_error(exc: BaseException) -> bool:
    """True for the project's user-facing error types and path errors (see the module docstring)."""
    if isinstance(exc, _PATH_ERRORS) and getattr(exc, "filename", None) is not None:
        return True
    return any(f"{c.__module__}.{c.__qualname__}" in USER_ERROR_NAMES for c in type(exc).__mro__)


def error_line(exc: BaseException) -> str:
    """``error: <message>`` on one line (a multi-line message is joined with ' | ')."""
    if isinstance(exc, OSError) and getattr(exc, "filename", None) is not None and exc.strerror:
        message = f"{exc.filename}: {exc.strerror}"
    else:
        message = str(exc) or type(exc).__name__
    return "error: " + " | ".join(part.strip() for part in message.splitlines() if part.strip())


def user_errors(main: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap an absl ``main(argv)``: a user-facing error prints :func:`error_line` on stderr and exits 1."""

    @functools.wraps(main)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return main(*args, **kwargs)
        except Exception as exc:
            if not is_user_error(exc):
                raise
            # A progress bar may have left the cursor mid-line on a terminal: start the error on its own line.
            lead = "\n" if getattr(sys.stderr, "isatty", lambda: False)() else ""
            print(lead + error_line(exc), file=sys.stderr, flush=True)
            sys.exit(1)

    return wrapped


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing (``app.run(main, flags_parser=parse_flags)``) with a bad flag as one ``error:`` line."""
    from absl import flags

    try:
        return flags.FLAGS(argv)
    except flags.Error as exc:
        print(error_line(exc) + " (--help lists the flags)", file=sys.stderr, flush=True)
        sys.exit(1)
