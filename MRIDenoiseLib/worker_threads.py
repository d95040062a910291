"""torch's operations single-threaded while a pool of worker threads, one per core, shares the work
(the non-local means and the grouped Wiener step): their operations are too small to share well.

The thread count the first caller found is put back when the last one leaves, so that two callers
at once (two pipelines in one process) cannot leave it at 1:

>>> import torch
>>> threads = torch.get_num_threads()
>>> with one_thread_per_operation():
...     inner = torch.get_num_threads()
>>> inner, torch.get_num_threads() == threads
(1, True)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_lock = threading.Lock()
_holders = 0
_found = 0


@contextmanager
def one_thread_per_operation() -> Iterator[None]:
    global _holders, _found
    with _lock:
        if _holders == 0:
            _found = torch.get_num_threads()
            torch.set_num_threads(1)
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                torch.set_num_threads(_found)
