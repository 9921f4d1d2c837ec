"""Errors a user can cause. The CLI prints their message as one line and exits with code 2."""

import errno
import os


class UserError(Exception):
    """Bad input from the user: a recipe, a file, an option. The message says what and what to do."""


class RecipeError(UserError):
    """A recipe that does not validate; the message names the file:line and the key."""


class GateError(UserError):
    """A measured number broke a gate the recipe set (accuracy, latency, size)."""


class ExportError(UserError):
    """A TFLite export that failed or did not validate against its Keras model."""


class DeviceError(UserError):
    """A board that cannot be reached, set up or run on."""


def did_you_mean(name: str, choices) -> str:
    """' (did you mean "x"?)' for the closest choice, or '' when nothing is close."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


#: OS errors that are the machine's state, not edgepipe's bug: what the user can do about each
OS_ERROR_HINTS = {
    errno.ENOSPC: "free some space and run again",
    errno.EDQUOT: "free some space (disk quota) and run again",
    errno.EROFS: "write somewhere else",
    errno.EACCES: "fix its permissions or use another path",
    errno.EPERM: "fix its permissions or use another path",
}


def os_error_message(e: OSError) -> str | None:
    """One line for an OSError in OS_ERROR_HINTS (path, cause, what to do); None for others,
    which stay tracebacks (they are more likely our bugs)."""
    hint = OS_ERROR_HINTS.get(e.errno)
    if hint is None:
        return None
    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{e.strerror or os.strerror(e.errno)}; {hint}"


# ----- one line from a pydantic error ----------------------------------------------------------
def first_error(e) -> dict:
    """The error of a pydantic ValidationError to report: an unknown key first (a typo, `hots:`,
    also makes the key it meant "missing")."""
    errs = e.errors()
    return next((x for x in errs if x["type"] == "extra_forbidden"), errs[0])


def pydantic_message(err: dict, known=()) -> str:
    """One pydantic error as the text after "key: ": an unknown key with a did-you-mean among
    `known`, a missing key, else pydantic's message without its "Value error, " prefix."""
    if err["type"] == "extra_forbidden":
        return f"unknown key{did_you_mean(err['loc'][-1], known)}"
    if err["type"] == "missing":
        return "required key is missing"
    return err["msg"].removeprefix("Value error, ")
