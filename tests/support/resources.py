"""What a process holds: resident memory, open files, and its Prometheus counters."""

from __future__ import annotations

import os
import resource
import urllib.request

import psutil
from prometheus_client.parser import text_string_to_metric_families

MIB = 1024 * 1024


def rss(pid: int) -> int:
    """Resident memory of one process, in bytes."""
    return int(psutil.Process(pid).memory_info().rss)


def tree_pids(pid: int) -> list[int]:
    """A process and all its descendants (a websockets_server, its workers and broker)."""
    parent = psutil.Process(pid)
    return [parent.pid, *(child.pid for child in parent.children(recursive=True))]


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_limit(pid: int) -> int:
    """The soft open-files limit of a running process."""
    soft, _ = psutil.Process(pid).rlimit(psutil.RLIMIT_NOFILE)
    return int(soft)


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft open-files limit towards ``wanted`` (children inherit
    it); returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def scrape(url: str) -> dict[str, float]:
    """Every sample of a /metrics page, keyed by name and labels as Prometheus prints
    them (``name{label="value"}``); counters keep their ``_total`` suffix."""
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def total(samples: dict[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    found = 0.0
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        if base == name and all(label in rest for label in wanted):
            found += value
    return found
