"""numba kernels: plain arrays and scalars in, arrays out, no I/O.

Importing this package first points numba's on-disk cache at a folder keyed by a hash of every
kernel source file and the numba version. numba only checks the file that defines a function, so
an edit to a helper it inlines from another file would otherwise run a stale kernel.

That folder is the whole key: numba's own locators file each entry under a hash of the source's
folder path (and numba before 0.68 stamps it with the file's mtime), so a second copy of the same
sources, such as a non-editable install, would compile again. `_KernelLocator` puts the kernel's
entries in the folder itself, stamped with the source's hash. It builds on numba's private cache
classes; where they are missing, the cache behaves as numba's own.
"""

import hashlib
import os
from pathlib import Path

import numba

KERNEL_DIR = Path(__file__).resolve().parent
SOURCE_HASHES = {
    src.name: hashlib.sha256(src.read_bytes()).hexdigest()
    for src in sorted(KERNEL_DIR.glob("*.py"))
}


def _cache_dir() -> Path:
    digest = hashlib.sha256(numba.__version__.encode())
    for name, source_hash in SOURCE_HASHES.items():
        digest.update(name.encode())
        digest.update(source_hash.encode())
    base = os.environ.get("DHLP_CACHE_DIR")
    root = Path(base) if base else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return (root if base else root / "dhlp") / "numba" / digest.hexdigest()[:16]


CACHE_DIR = _cache_dir()


def _register_locator() -> bool:
    """Put `_KernelLocator` first in numba's locator list; False if numba has no such list."""
    try:
        from numba.core import caching

        impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl
        base = caching._CacheLocator
        locators = impl._locator_classes
    except (ImportError, AttributeError):
        return False

    class _KernelLocator(base):
        """Entries of kernel functions in CACHE_DIR, stamped with their source file's hash."""

        def __init__(self, py_func, py_file: str) -> None:
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno

        def get_cache_path(self) -> str:
            return str(CACHE_DIR)

        def get_source_stamp(self) -> str:
            return SOURCE_HASHES[Path(self._py_file).name]

        def get_disambiguator(self) -> str:
            return str(self._lineno)

        @classmethod
        def from_function(cls, py_func, py_file: str):
            if Path(py_file).resolve().parent != KERNEL_DIR:
                return None  # not a kernel function: numba's own locators decide
            locator = cls(py_func, py_file)
            try:
                locator.ensure_cache_path()
            except OSError:  # not writable: no cache, as with numba's own locators
                return None
            return locator

    locators.insert(0, _KernelLocator)
    return True


if not _register_locator():
    numba.config.CACHE_DIR = str(CACHE_DIR)


def cached() -> bool:
    """Whether the run kernel's entry functions are in the cache for this machine, so a run will
    load rather than compile them (a call with new argument types still compiles). Asks numba's
    own cache objects; True when they cannot be asked (then nothing is announced, as before)."""
    from backtest.kernel.loop import new_state, ticks

    try:
        for dispatcher in (new_state, ticks):
            cache = dispatcher._cache
            magic = dispatcher.targetctx.codegen().magic_tuple()
            entries = cache._cache_file._load_index()
            names = [name for key, name in entries.items() if key[1] == magic]
            if not any(os.path.exists(os.path.join(cache.cache_path, n)) for n in names):
                return False
    except (AttributeError, TypeError, IndexError):
        return True
    return True
