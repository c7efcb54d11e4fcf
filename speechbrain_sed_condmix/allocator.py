"""CPU memory allocation settings that make training steps faster.

A CRNN training step at the paper's batch allocates and frees feature maps
of up to 250 MB many times (the first block's [48, 16, 626, 128] maps, their
gates and their gradients). By default each such map is fresh memory from
the kernel, and the kernel maps it in 4 KiB pages, one page fault each, on
first write: on this project's 2-core CPU that made the forward pass without
autograd about twice as slow as the arithmetic needs
(``benchmarks/compare_step.py``, README Performance). Two process-wide
settings remove most of that cost:

* ``THP_MEM_ALLOC_ENABLE=1``: torch's CPU allocator asks the kernel for
  transparent huge pages (2 MiB) for tensors of 2 MiB and more, so a new
  map costs up to 512 times fewer page faults. Linux only; without effect
  where transparent huge pages are off
  (``/sys/kernel/mm/transparent_hugepage/enabled`` set to ``never``).
* glibc's ``mallopt``: blocks of up to 32 MiB come from the heap instead of
  fresh mappings, and freed memory is kept in the process (trim threshold
  2 GiB, top pad 1 GiB) instead of being returned and faulted in again at
  the next step. The same values go into the ``MALLOC_*`` variables for
  programs that this process starts.

Only where memory comes from changes: no computation does, and a training
run gives the same numbers with or without these settings
(``tests/unit/test_allocator.py``). Torch reads ``THP_MEM_ALLOC_ENABLE`` at
its first allocation, so :func:`configure_cpu_allocator` must run before
``import torch``: the recipes' ``train.py`` calls it first thing. Values
already in the environment win, so ``THP_MEM_ALLOC_ENABLE=0`` or the
user's own ``MALLOC_*`` settings turn a part off.

Authors
-------
* speechbrain-sed-condmix contributors 2026
"""

import ctypes
import os
import platform
import sys

#: Torch's huge-page switch for CPU tensors of 2 MiB and more.
THP_ENV = "THP_MEM_ALLOC_ENABLE"

#: glibc settings, as ``(mallopt parameter, MALLOC_* variable, value)``:
#: M_MMAP_THRESHOLD (-3, at most 32 MiB on 64-bit systems), M_TRIM_THRESHOLD
#: (-1) and M_TOP_PAD (-2); ``mallopt`` takes an int, hence 2**31 - 1.
GLIBC_SETTINGS = (
    (-3, "MALLOC_MMAP_THRESHOLD_", 32 * 1024 * 1024),
    (-1, "MALLOC_TRIM_THRESHOLD_", 2**31 - 1),
    (-2, "MALLOC_TOP_PAD_", 1024 * 1024 * 1024),
)


def _mallopt():
    """glibc's ``mallopt`` function, or None on another C library."""
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None


def configure_cpu_allocator(environ=None):
    """Turn on huge pages for torch's CPU tensors and keep freed memory.

    Call it before ``import torch`` (see the module docstring). Settings
    that the environment already holds are left as they are.

    Arguments
    ---------
    environ : dict, optional
        The environment to read and update (default ``os.environ``).

    Returns
    -------
    dict
        What was set by this call: variable name -> value (the glibc ones
        only when ``mallopt`` accepted them).

    Example
    -------
    >>> env = {"THP_MEM_ALLOC_ENABLE": "0"}
    >>> "THP_MEM_ALLOC_ENABLE" in configure_cpu_allocator(env)
    False
    >>> env["THP_MEM_ALLOC_ENABLE"]
    '0'
    """
    environ = os.environ if environ is None else environ
    applied = {}
    if THP_ENV not in environ:
        environ[THP_ENV] = "1"
        applied[THP_ENV] = "1"
    mallopt = _mallopt()
    if mallopt is None:
        return applied
    for param, name, value in GLIBC_SETTINGS:
        if name in environ:
            continue  # glibc already read the user's value at start-up
        if mallopt(ctypes.c_int(param), ctypes.c_int(value)) == 1:
            environ[name] = str(value)
            applied[name] = str(value)
    return applied
