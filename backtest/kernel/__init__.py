"""numba kernels: plain arrays and scalars in, arrays out, no I/O.

Importing this package first points numba's on-disk cache at a folder keyed by a hash of every
kernel source file and the numba version. numba only checks the file that defines a function, so
an edit to a helper it inlines from another file would otherwise run a stale kernel.
"""

import hashlib
import os
from pathlib import Path

import numba


def _cache_dir() -> Path:
    digest = hashlib.sha256(numba.__version__.encode())
    for src in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(src.name.encode())
        digest.update(src.read_bytes())
    base = os.environ.get("DHLP_CACHE_DIR")
    root = Path(base) if base else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return (root if base else root / "dhlp") / "numba" / digest.hexdigest()[:16]


CACHE_DIR = _cache_dir()
numba.config.CACHE_DIR = str(CACHE_DIR)
