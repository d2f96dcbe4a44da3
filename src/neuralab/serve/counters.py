"""Counters the prediction server's /metrics reports, in memory that several worker processes
can share: one row of float64 values per worker, written only by that worker (no lock on the
hot path), summed over rows when /metrics is read. With one process the table is a plain array.

The shared memory is created by the parent before the workers are spawned and handed to each of
them (`SharedTable`); a worker claims the row of no live process (a restarted worker takes the
row of the one it replaces, so counters never go down), and its totals stay in the sum after
it exits.

Example:
    >>> table = SharedTable.create(columns=10, workers=2)   # in the parent
    >>> counters = table.attach()                           # in each worker: its own row
    >>> counters.add(3, 1.0); counters.totals()[3]
    1.0
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

SPAWN = multiprocessing.get_context("spawn")  # torch and OpenMP are not fork-safe


class Counters:
    """One writer's row of a (rows, columns) float64 table; `totals` sums every row.

    Args:
        table: (rows, columns) float64 array, shared or not.
        row: the row this process writes.
        workers: how many worker processes the server runs (reported by /metrics).
    """

    def __init__(self, table: np.ndarray, row: int = 0, workers: int = 1) -> None:
        self.table, self.row, self.workers = table, row, workers
        self.values = table[row]  # a view: writes land in the (shared) table

    @classmethod
    def local(cls, columns: int) -> Counters:
        """Counters of a single-process server (plain memory)."""
        return cls(np.zeros((1, columns)))

    def add(self, column: int, amount: float = 1.0) -> None:
        self.values[column] += amount

    def set(self, column: int, value: float) -> None:
        self.values[column] = value

    def totals(self) -> np.ndarray:
        """(columns,) the sum over every worker's row."""
        return self.table.sum(axis=0)

    def maximum(self, column: int) -> float:
        """The largest value of `column` over every worker's row."""
        return float(self.table[:, column].max())


@dataclass
class SharedTable:
    """Shared memory for `workers` rows (plus one: a worker replaced by uvicorn starts its
    successor before it exits) and the process id that owns each row. Picklable to a spawned
    process (only while it is being spawned, as multiprocessing's shared objects are)."""

    buffer: Any  # multiprocessing RawArray of float64, rows * columns
    owners: Any  # multiprocessing Array of int64 process ids, one per row (0: free)
    columns: int
    workers: int

    @classmethod
    def create(cls, columns: int, workers: int) -> SharedTable:
        rows = workers + 1
        buffer = SPAWN.RawArray("d", rows * columns)
        return cls(buffer, SPAWN.Array("q", rows), columns, workers)

    def attach(self) -> Counters:
        """This process's Counters: the first row no live process owns."""
        table = np.frombuffer(self.buffer, dtype=np.float64).reshape(-1, self.columns)
        with self.owners.get_lock():
            for row, owner in enumerate(self.owners):
                if owner == 0 or not process_alive(owner):
                    self.owners[row] = os.getpid()
                    return Counters(table, row, self.workers)
        raise RuntimeError(
            f"all {len(self.owners)} metric rows belong to live processes "
            f"({list(self.owners)}); at most {self.workers} workers and one replacement may run"
        )


def process_alive(pid: int) -> bool:
    """True while a process with this id exists (and is not a reaped zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True
