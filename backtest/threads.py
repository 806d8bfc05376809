"""Long-lived worker threads for running paths and for overlapping Python work with the kernel.

glibc gives each thread its own malloc arena and seldom returns what a finished thread freed:
with a fresh thread pool per batch, a process's peak memory grew run after run (five 1,000-path
runs in one process, as a sweep worker does: 639 -> 922 MB, against 650 MB without threads).
Reusing the same threads keeps their arenas in use instead of abandoning them.
"""

from concurrent.futures import ThreadPoolExecutor
from functools import cache


@cache
def pool(purpose: str, workers: int) -> ThreadPoolExecutor:
    """The process's pool of `workers` threads for one purpose (created on first use)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"dhlp-{purpose}")
