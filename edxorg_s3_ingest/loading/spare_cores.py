"""The spare cores this process's loads may take, each for a parse helper (parse_helper.py).

Apart from parse_helper.py so that the CLI and its workers set them without importing pyarrow
(a run with nothing new never does).
"""

_tokens = None


def use_spare_cores(tokens) -> None:
    """The spare cores of this process's loads: a semaphore (threading's, or multiprocessing's
    shared with the CLI), or None for none."""
    global _tokens
    _tokens = tokens


def spare_cores():
    return _tokens
