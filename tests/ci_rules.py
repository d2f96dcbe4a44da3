"""A pytest plugin (loaded by conftest.py): what a CI run requires of the suite.

No silent skips of the tests that need a setup.
Real-data tests need `NEURALAB_DATA`, browser tests need Chromium; without them they skip. On a
developer's machine that is fine, and the skip reason says what to set. Under CI (`CI=true` in
the environment, as GitHub Actions, GitLab and most CI services set it) such a skip is a
failure: a green CI run must mean those tests ran. A test module skipped as a whole (a missing
test dependency) also fails a CI run, since CI installs every test extra. Other skips (a
machine-specific count, a POSIX-only test) stay skips everywhere.

Hypothesis: a failing property prints the blob that replays it (@reproduce_failure); under CI
its examples are derandomised, so a CI failure reproduces on every rerun and CI never turns red
on an example that an earlier run did not try.
"""

from __future__ import annotations

import os

import pytest

# marker -> what to set or install so that tests with that marker run instead of skipping.
NEEDS = {
    "realdata": "set NEURALAB_DATA=/path/to/datasets (the folder holding mnist/, cifar10/, ...)",
    "browser": "install chromium and chromium-driver (Debian: apt-get install chromium "
    "chromium-driver) and the test extra (pip install -e '.[test]')",
}
# Words of a skip reason that tie an unmarked test to one of the setups above.
REASON_WORDS = {"NEURALAB_DATA": "realdata", "chromium": "browser", "chromedriver": "browser"}
TEST_EXTRA = "install the test extra: pip install -e '.[test]'"
SKIPPED_MODULES = pytest.StashKey[list[str]]()
PROFILE_LOADED: list[bool] = []  # whether this process loaded the hypothesis profile


def in_ci() -> bool:
    """True when the environment says this is a CI run (CI=true, as CI services set it)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def pytest_configure(config: pytest.Config) -> None:
    load_hypothesis_profile()
    known = " ".join(config.getini("markers"))
    for marker, need in NEEDS.items():
        if f"{marker}:" not in known:
            config.addinivalue_line("markers", f"{marker}: skips unless you {need}; fails in CI")
    config.stash[SKIPPED_MODULES] = []


def load_hypothesis_profile() -> None:
    """print_blob everywhere; derandomize under CI (see the module docstring). Once per
    process: the pytester runs of test_ci_rules.py must not change the outer run's profile."""
    try:
        from hypothesis import settings
    except ImportError:  # test_properties.py skips without hypothesis
        return
    if PROFILE_LOADED:
        return
    PROFILE_LOADED.append(True)
    settings.register_profile("neuralab", print_blob=True, derandomize=False)
    settings.register_profile("neuralab-ci", print_blob=True, derandomize=True)
    settings.load_profile("neuralab-ci" if in_ci() else "neuralab")


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The reason a skipped report gives ("Skipped: " removed)."""
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ")


def needed_setup(markers: set[str], reason: str) -> str | None:
    """What to set for a skip of this kind to go away; None for skips allowed in CI."""
    kinds = [m for m in NEEDS if m in markers]
    kinds += [kind for word, kind in REASON_WORDS.items() if word.lower() in reason.lower()]
    return NEEDS[kinds[0]] if kinds else None


def with_hint(reason: str, hint: str) -> str:
    """The reason, with the hint added unless the reason already says it (its first words)."""
    said = " ".join(hint.split("=")[0].split()[:2]).lower()  # "set neuralab_data", ...
    return reason if said in reason.lower() else f"{reason} ({hint})"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if not report.skipped or hasattr(report, "wasxfail"):
        return report
    reason = skip_reason(report)
    need = needed_setup({mark.name for mark in item.iter_markers()}, reason)
    if need and in_ci():
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which must run it: {reason}. To run it: {need}"
    elif need or from_importorskip(call):
        path, line, _ = report.longrepr
        report.longrepr = (path, line, f"Skipped: {with_hint(reason, need or TEST_EXTRA)}")
    return report


def from_importorskip(call: pytest.CallInfo) -> bool:
    """Whether the skip came from pytest.importorskip (a missing test dependency)."""
    traceback = call.excinfo.traceback if call.excinfo else []
    return any(entry.name == "importorskip" for entry in traceback)


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    report = yield
    if report.skipped and isinstance(collector, pytest.Module):
        reason = skip_reason(report)
        reason = with_hint(reason, needed_setup(set(), reason) or TEST_EXTRA)
        if isinstance(report.longrepr, tuple):
            report.longrepr = (*report.longrepr[:2], f"Skipped: {reason}")
        if in_ci():
            collector.config.stash[SKIPPED_MODULES].append(f"{report.nodeid}: {reason}")
    return report


def pytest_sessionfinish(session: pytest.Session) -> None:
    if session.config.stash.get(SKIPPED_MODULES, []) and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    skipped = config.stash.get(SKIPPED_MODULES, [])
    if skipped:
        terminalreporter.write_sep("=", "test modules skipped under CI=true (a failure)", red=True)
        for line in skipped:
            terminalreporter.write_line(line)
