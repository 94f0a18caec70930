"""What every Python interop driver shares (tests/interop.rs runs them): a deviation from what
the specs demand is an exception with a message, each step prints `[lib] ...`, and the last line
is `[lib] PASS`, which the Rust test looks for."""


class Deviation(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Deviation(message)


def logger(lib):
    """A `log(message)` that prints `[lib] message` at once (the test shows the output)."""
    return lambda message: print(f"[{lib}] {message}", flush=True)
