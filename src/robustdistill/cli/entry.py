"""The entry point: run a command; user errors become one line on stderr and a non-zero exit code."""

from __future__ import annotations

import contextlib
import sys
import traceback
import warnings

from robustdistill.cli.common import _STATE, app, console, err_console
from robustdistill.errors import RobustDistillError, one_line


def _print_error(text: str) -> None:
    # markup=False: a message holding "[...]" (a path, a list value) is printed as it is
    err_console.print(f"error: {one_line(text)}", markup=False, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one line on stderr and a non-zero exit."""
    args = sys.argv[1:] if argv is None else argv
    _STATE["debug"] = "--debug" in args
    previous_format = warnings.formatwarning
    with warnings.catch_warnings():  # filters and format are restored afterwards (main may run in-process)
        warnings.filterwarnings("default")
        warnings.formatwarning = lambda message, category, *rest: f"warning: {one_line(message)}\n"
        try:
            _run(args)
        finally:
            warnings.formatwarning = previous_format


def _click_classes(name: str) -> tuple[type[BaseException], ...]:
    """`name` from click and from the copy of click that typer >= 0.22 vendors (`typer._click`)."""
    import importlib

    found: list[type[BaseException]] = []
    for module in ("click.exceptions", "typer.exceptions", "typer._click.exceptions"):
        with contextlib.suppress(ImportError):
            cls = getattr(importlib.import_module(module), name, None)
            if isinstance(cls, type) and cls not in found:
                found.append(cls)
    return tuple(found)


_EXIT, _ABORT, _USAGE = _click_classes("Exit"), _click_classes("Abort"), _click_classes("ClickException")


def _run(args: list[str]) -> None:
    from robustdistill.errors import Interrupted

    try:
        # standalone_mode=False makes click *return* the code of a `typer.Exit` instead of exiting
        code = app(args=args, standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except _EXIT as stop:
        sys.exit(getattr(stop, "exit_code", 0))
    except _ABORT:
        err_console.print("aborted", markup=False)
        sys.exit(130)
    except _USAGE as error:
        message = error.format_message()  # type: ignore[attr-defined]
        if type(error).__name__ == "NoArgsIsHelpError":  # a bare `robustdistill`: the help, not an error
            if message.strip():
                console.print(message, markup=False, highlight=False)
            sys.exit(0)
        _print_error(message)
        sys.exit(2)
    except Interrupted as stop:
        err_console.print(str(stop), markup=False, highlight=False)
        sys.exit(stop.exit_code)
    except RobustDistillError as error:
        if _STATE["debug"]:
            traceback.print_exc()
        _print_error(str(error))
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted; resume with --resume", markup=False)
        sys.exit(130)
    except MemoryError:
        if _STATE["debug"]:
            traceback.print_exc()
        _print_error("out of memory; lower --batch-size, use a smaller --subset or model, or free memory")
        sys.exit(1)
    except OSError as error:  # a file the run needed could not be read or written: name it
        if _STATE["debug"]:
            traceback.print_exc()
        where = f" '{error.filename}'" if error.filename else ""
        _print_error(f"cannot access{where}: {error.strerror or error}")
        sys.exit(1)
    except Exception as error:  # an unexpected failure: still one line unless --debug
        if _STATE["debug"]:
            traceback.print_exc()
        message = str(error).splitlines()[0] if str(error) else ""
        _print_error(f"{type(error).__name__}: {message} (run with --debug for the traceback)")
        sys.exit(1)
