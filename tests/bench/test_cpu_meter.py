"""The harness measures a server's CPU apart as user and kernel time (``CpuMeter``),
so a run can say whether a gap between two servers is in their own code or in the
kernel's work for them. Checked on real processes: one spinning in Python, one whose
time is the kernel's (reading /dev/zero a MiB at a time)."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil
import pytest

from bench.scenarios import CpuMeter

SPIN = "while True: pass"
KERNEL = "import os\nfd = os.open('/dev/zero', os.O_RDONLY)\nwhile True: os.read(fd, 1 << 20)"


def measure(code: str) -> tuple[float, float, float]:
    """(cores, user cores, system cores) of a child running ``code``, over the time it
    takes to use a third of a CPU second."""
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        process = psutil.Process(child.pid)
        meter = CpuMeter([process], [])
        deadline = time.monotonic() + 30
        while sum(process.cpu_times()[:2]) - meter.user_before - meter.system_before < 0.33:
            assert time.monotonic() < deadline, "the child used no CPU"
            time.sleep(0.05)
        cores, _ = meter.read()
        return cores, meter.server_user_cores, meter.server_system_cores
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize(("code", "mostly"), [(SPIN, "user"), (KERNEL, "system")])
def test_the_meter_splits_a_servers_cpu_into_its_own_code_and_the_kernels(
    code: str, mostly: str
) -> None:
    cores, user, system = measure(code)
    print(f"{mostly}: {cores:.2f} cores, {user:.2f} user, {system:.2f} system")
    assert user + system == pytest.approx(cores)
    assert cores > 0.3  # the child kept a core busy
    if mostly == "user":
        assert user > 4 * system
    else:
        assert system > 2 * user
