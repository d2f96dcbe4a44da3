"""CPU training keeps freed memory for reuse (glibc), and gives malloc back as it was."""

from __future__ import annotations

import os
import resource
from pathlib import Path

import pytest
import torch

from neuralab.train import allocator

needs_glibc = pytest.mark.skipif(
    allocator.glibc() is None, reason="tests glibc's malloc settings: needs Linux with glibc"
)
CPU = torch.device("cpu")
BLOCK = 64 * 2**20  # bytes: above glibc's largest mmap threshold (32 MiB)
PAGES = BLOCK // resource.getpagesize()
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")  # e.g. "always [madvise] never"


def huge_pages_reason(setting: str, environ: dict[str, str]) -> str | None:
    """Why this machine may back a large block with 2 MiB huge pages, or None. Then a fresh
    64 MiB block faults in as 32 pages, not 16,384, and the fault counts below cannot tell a
    reused block from a new one: those tests skip, saying why (a machine-specific skip)."""
    chosen = setting[setting.find("[") + 1 : setting.find("]")] if "[" in setting else ""
    if chosen == "always":
        return (
            f"transparent huge pages are 'always' ({THP_SETTING}): fault counts cannot show reuse"
        )
    if chosen == "madvise" and environ.get("THP_MEM_ALLOC_ENABLE") == "1":
        return (
            "THP_MEM_ALLOC_ENABLE=1 makes torch ask for huge pages: fault counts cannot show reuse"
        )
    return None


HUGE_PAGES = huge_pages_reason(
    THP_SETTING.read_text() if THP_SETTING.exists() else "", dict(os.environ)
)
counts_small_pages = pytest.mark.skipif(HUGE_PAGES is not None, reason=str(HUGE_PAGES))


@pytest.mark.parametrize(
    "setting, environ, skips",
    [
        ("[always] madvise never", {}, True),
        ("always [madvise] never", {}, False),
        ("always [madvise] never", {"THP_MEM_ALLOC_ENABLE": "1"}, True),
        ("always madvise [never]", {"THP_MEM_ALLOC_ENABLE": "1"}, False),
        ("", {}, False),  # no THP support in the kernel
    ],
)
def test_fault_counts_skip_only_where_huge_pages_back_large_blocks(
    setting: str, environ: dict, skips: bool
) -> None:
    assert (huge_pages_reason(setting, environ) is not None) == skips


def faults_of_second_block() -> int:
    """Minor page faults while a large block is allocated and written after one was freed."""
    first = torch.ones(BLOCK // 4)
    del first
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    second = torch.ones(BLOCK // 4)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    del second
    return faults


@needs_glibc
@counts_small_pages
def test_a_freed_block_is_reused_without_faulting_its_pages_in_again() -> None:
    with allocator.reused_memory("reuse", CPU):
        faults = [faults_of_second_block() for _ in range(5)]
        assert allocator.current() == "freed memory reused"
    # The heap may grow during the first rounds; then the same memory serves every block.
    assert max(faults[-2:]) < PAGES // 10, faults


@needs_glibc
@counts_small_pages
def test_malloc_is_as_before_after_the_run() -> None:
    with allocator.reused_memory("reuse", CPU):
        faults_of_second_block()
    assert faults_of_second_block() > PAGES // 2  # unmapped on free, faulted in again
    assert allocator.current() == "system allocator"


@needs_glibc
@counts_small_pages
def test_the_system_setting_leaves_malloc_alone() -> None:
    with allocator.reused_memory("system", CPU):
        assert allocator.current() == "system allocator (as configured)"
        assert faults_of_second_block() > PAGES // 2


class FakeLibc:
    """Records the mallopt / malloc_trim calls instead of making them."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def mallopt(self, *args: int) -> int:
        self.calls.append(args)
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("trim", pad))
        return 1


def test_a_gpu_run_leaves_malloc_alone(monkeypatch) -> None:
    libc = FakeLibc()
    monkeypatch.setattr(allocator, "glibc", lambda: libc)
    with allocator.reused_memory("reuse", torch.device("cuda")):
        assert allocator.current() == "system allocator"
    assert libc.calls == []


def test_settings_are_restored_even_when_training_fails(monkeypatch) -> None:
    libc = FakeLibc()
    monkeypatch.setattr(allocator, "glibc", lambda: libc)
    with pytest.raises(RuntimeError), allocator.reused_memory("reuse", CPU):
        raise RuntimeError("the run failed")
    assert libc.calls[-3:] == [
        (allocator.M_TRIM_THRESHOLD, allocator.DEFAULT_TRIM_THRESHOLD),
        (allocator.M_MMAP_MAX, allocator.DEFAULT_MMAP_MAX),
        ("trim", 0),
    ]
    assert allocator.current() == "system allocator"


@needs_glibc
def test_training_runs_with_reused_memory_and_says_so(tmp_path, capsys) -> None:
    import neuralab
    from neuralab.train.callbacks import Callback

    seen = []

    class Watch(Callback):
        def on_step_end(self, trainer) -> None:
            seen.append(allocator.current())

    runs = {}
    for setting in ("reuse", "system"):
        runs[setting] = neuralab.train(
            data="digits",
            model="mlp",
            epochs=0.2,
            out=str(tmp_path / setting),
            overrides=[f"train.cpu_memory={setting}"],
            callbacks=[Watch()],
            progress="none",
        )
    shown = capsys.readouterr().out
    assert "; freed memory reused\n" in shown and "system allocator (as configured)" in shown
    assert runs["reuse"].metrics["memory"] == "freed memory reused"
    assert runs["system"].metrics["memory"] == "system allocator (as configured)"
    assert set(seen) == {"freed memory reused", "system allocator (as configured)"}
    assert allocator.current() == "system allocator"
