"""Job functions referenced by the APScheduler job store the import tests build."""


def nightly(full: bool = False) -> None:
    """A job function; APScheduler stores its reference, never its code."""


def poll(*args: object) -> None:
    """Another job function."""
