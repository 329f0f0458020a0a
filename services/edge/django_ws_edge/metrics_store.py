# prometheus_client's MmapedDict is untyped; this module is its typed adapter.
# mypy: disable-error-code="no-untyped-call"
"""Where the edge workers' metric values live: shared files that cannot crash a worker.

prometheus_client's multiprocess mode maps one file per worker and metric type and
grows it with ``truncate``, which allocates nothing: on a full tmpfs the first write
to a new page kills the worker with SIGBUS, and its replacement dies the same way.
Here every block of a file is allocated (``posix_fallocate``) before it is mapped, so
a full or read-only directory shows up as an ``OSError`` at allocation instead; the
value that could not get its place is kept in memory (missing from ``/metrics``),
logged once and counted, and the worker carries on.

The supervisor folds the counters and histograms of a worker that died into
``*_retired.db`` files and removes the dead worker's files, so totals stay monotonic
and the directory holds a bounded number of files however often workers restart.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
from typing import Any

from prometheus_client import values
from prometheus_client.mmap_dict import MmapedDict, mmap_key

logger = logging.getLogger("django_ws.edge")

INITIAL_FILE_BYTES = 1 << 16
"""Bytes allocated for a new metrics file (prometheus_client's initial size)."""

RETIRED = "retired"
"""The "pid" part of the files that hold the totals of workers that died."""

_ACCUMULATED_TYPES = ("counter", "histogram")


def _allocate(fd: int, size: int) -> None:
    """Give the file ``size`` bytes of real blocks (raises OSError, e.g. ENOSPC)."""
    os.posix_fallocate(fd, 0, size)


def _entry_bytes(key: str) -> int:
    """The bytes one value takes in an MmapedDict (its layout: length, padded key,
    value, timestamp)."""
    encoded = len(key.encode("utf-8"))
    return 4 + encoded + (8 - (encoded + 4) % 8) + 16


class AllocatedMmapedDict(MmapedDict):
    """An MmapedDict whose every mapped byte is backed by allocated blocks."""

    def __init__(self, filename: str) -> None:
        fd = os.open(filename, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size == 0:
                try:
                    _allocate(fd, INITIAL_FILE_BYTES)
                except OSError:
                    # An empty file would break every scrape that reads the directory.
                    os.unlink(filename)
                    raise
        finally:
            os.close(fd)
        super().__init__(filename)

    def _init_value(self, key: str) -> None:
        needed = self._used + _entry_bytes(key)
        capacity = self._capacity
        while needed > capacity:
            capacity *= 2
        if capacity != self._capacity:
            _allocate(self._f.fileno(), capacity)
        super()._init_value(key)


class _Degraded:
    """Metric values this process keeps in memory because their file failed."""

    values = 0
    logged = False


def degraded_values() -> int:
    """How many metric values of this process are in memory only (0 when all are in
    the shared files)."""
    return _Degraded.values


def _degrade(prefix: str, exc: Exception) -> None:
    _Degraded.values += 1
    if not _Degraded.logged:
        _Degraded.logged = True
        logger.error(
            "metrics: cannot write %s values to %s (%s); this worker keeps them in memory "
            "and /metrics misses them (counted in django_ws_edge_metrics_degraded_total)",
            prefix,
            os.environ.get("PROMETHEUS_MULTIPROC_DIR", "?"),
            exc,
        )


_lock = threading.Lock()
_files: dict[str, AllocatedMmapedDict | None] = {}  # prefix -> file, None once it failed
_values: list[FileBackedValue] = []
_pid = os.getpid()


def _after_fork() -> None:
    """A forked child must not write into its parent's files: it starts its own, with
    the values it inherited (as prometheus_client's multiprocess values do)."""
    global _pid
    _pid = os.getpid()
    _files.clear()
    for value in _values:
        value._open()


class FileBackedValue:
    """A metric value in this process's shared file, or in memory when the file cannot
    take it. Same interface as prometheus_client's multiprocess values."""

    _multiprocess = True

    def __init__(
        self,
        typ: str,
        metric_name: str,
        name: str,
        labelnames: Any,
        labelvalues: Any,
        help_text: str,
        multiprocess_mode: str = "",
        **kwargs: Any,
    ) -> None:
        self._prefix = f"gauge_{multiprocess_mode}" if typ == "gauge" else typ
        self._key = mmap_key(metric_name, name, labelnames, labelvalues, help_text)
        self._value = 0.0
        self._timestamp = 0.0
        self._file: AllocatedMmapedDict | None = None
        with _lock:
            if _pid != os.getpid():
                _after_fork()
            self._open()
            _values.append(self)

    def _open(self) -> None:
        """Find this value's place in this process's file (lock held)."""
        self._file = None
        prefix = self._prefix
        try:
            if prefix not in _files:
                directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
                _files[prefix] = None
                _files[prefix] = AllocatedMmapedDict(os.path.join(directory, f"{prefix}_{_pid}.db"))
            file = _files[prefix]
            if file is None:
                _Degraded.values += 1
                return
            # A new file starts at zero: after a fork the parent's file keeps its counts.
            self._value, self._timestamp = file.read_value(self._key)
            self._file = file
        except (OSError, KeyError, ValueError) as exc:
            _degrade(prefix, exc)

    def inc(self, amount: float) -> None:
        with _lock:
            if _pid != os.getpid():
                _after_fork()
            self._value += amount
            self._timestamp = 0.0
            if self._file is not None:
                self._file.write_value(self._key, self._value, 0.0)

    def set(self, value: float, timestamp: float | None = None) -> None:
        with _lock:
            if _pid != os.getpid():
                _after_fork()
            self._value = value
            self._timestamp = timestamp or 0.0
            if self._file is not None:
                self._file.write_value(self._key, value, self._timestamp)

    def set_exemplar(self, exemplar: Any) -> None:
        return  # not kept in multiprocess mode (as in prometheus_client)

    def get(self) -> float:
        with _lock:
            return self._value

    def get_exemplar(self) -> None:
        return None


def install() -> None:
    """Make metrics created from now on in this process use :class:`FileBackedValue`
    when the supervisor gave it a metrics directory."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        values.ValueClass = FileBackedValue


def retire_process(pid: int, directory: str) -> int:
    """Fold a dead worker's counters and histograms into the retired totals and remove
    all of its files. Returns how many of its values could not be folded (they are
    lost, and the caller counts them): the files are removed regardless, since a full
    directory is the likeliest reason for a failure."""
    lost = 0
    for typ in _ACCUMULATED_TYPES:
        path = os.path.join(directory, f"{typ}_{pid}.db")
        if not os.path.exists(path):
            continue
        try:
            dead = list(MmapedDict.read_all_values_from_file(path))
        except (OSError, RuntimeError, ValueError) as exc:
            logger.error("metrics: cannot read %s of dead worker %d: %s", path, pid, exc)
            continue
        retired: AllocatedMmapedDict | None = None
        try:
            retired = AllocatedMmapedDict(os.path.join(directory, f"{typ}_{RETIRED}.db"))
            for key, value, _timestamp, _pos in dead:
                total, _ = retired.read_value(key)
                retired.write_value(key, total + value, 0.0)
        except OSError as exc:
            lost += len(dead)
            logger.error(
                "metrics: cannot keep the %s totals of dead worker %d (%s); they are lost",
                typ,
                pid,
                exc,
            )
        finally:
            if retired is not None:
                retired.close()
    for path in glob.glob(os.path.join(directory, f"*_{pid}.db")):
        try:
            os.remove(path)
        except OSError as exc:
            logger.error("metrics: cannot remove %s of dead worker %d: %s", path, pid, exc)
    return lost
