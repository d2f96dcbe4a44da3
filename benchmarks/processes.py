"""Running one contender in its own process. Standard library only, so a benchmark module that
also serves as a worker process can import it without loading torch into that worker."""

from __future__ import annotations

import os
import subprocess
import time


def run_process(command: list[str], env: dict[str, str] | None = None) -> tuple[str, float, int]:
    """Run `command` (with `env`, default: this process's); returns (stdout, wall seconds, peak
    resident memory of that process in MiB)."""
    output, wall, usage = run_measured(command, env)
    return output, wall, usage.ru_maxrss // 1024  # KiB on Linux


def run_measured(
    command: list[str], env: dict[str, str] | None = None
) -> tuple[str, float, os.struct_rusage]:
    """`run_process` with the process's whole resource usage (page faults, CPU times, peak)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"{' '.join(command)} failed with exit status {process.returncode}")
    return output, time.perf_counter() - start, usage
