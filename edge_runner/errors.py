"""The one error type of edge-runner: something the user can fix (a path, a file, an option)."""


class RunnerError(Exception):
    """A user error. The CLI prints its message as one line and exits with code 2."""


def did_you_mean(name, choices) -> str:
    """' (did you mean "x"?)' for the closest choice, or '' when nothing is close."""
    import difflib

    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""
