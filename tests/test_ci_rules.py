"""The CI-skip hook (tests/ci_rules.py), run on generated test files with pytester: under
CI=true a skipped real-data or browser test, or a skipped test module, fails the run; a
machine-specific skip stays a skip; outside CI every such skip says what to set."""

from __future__ import annotations

import pytest

# The plugin module is already imported (by conftest.py), so pytester's runs cannot rewrite it.
PLUGIN = ["-p", "ci_rules", "-W", "ignore::pytest.PytestAssertRewriteWarning"]

SKIPPING_TESTS = """
import os
import pytest

@pytest.mark.realdata
def test_on_mnist():
    if not os.environ.get("NEURALAB_DATA"):
        pytest.skip("NEURALAB_DATA is not set")

@pytest.mark.browser
@pytest.mark.skipif(True, reason="no chromium on this machine")
def test_in_a_browser():
    pass

def test_unmarked_but_needs_the_data():
    pytest.skip("no mnist/ under NEURALAB_DATA=/nowhere")

@pytest.mark.skipif(True, reason="transparent huge pages are 'always' on this machine")
def test_machine_specific_count():
    pass

def test_that_runs():
    pass
"""


@pytest.fixture
def generated(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.delenv("NEURALAB_DATA", raising=False)
    pytester.makepyfile(test_generated=SKIPPING_TESTS)
    return pytester


def test_under_ci_data_and_browser_skips_fail(
    generated: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    result = generated.runpytest(*PLUGIN, "-rA")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    outcomes = result.parseoutcomes()
    # The three setup-dependent skips fail (the skipif one in setup: counted as an error).
    assert outcomes.get("failed", 0) + outcomes.get("errors", 0) == 3
    assert outcomes["skipped"] == 1 and outcomes["passed"] == 1
    for line in (
        "FAILED *::test_on_mnist - skipped under CI=true*NEURALAB_DATA is not set*"
        "To run it: set NEURALAB_DATA=/path/to/datasets*",
        "ERROR *::test_in_a_browser - skipped under CI=true*"
        "To run it: install chromium and chromium-driver*",
        "FAILED *::test_unmarked_but_needs_the_data - *To run it: set NEURALAB_DATA=*",
        "SKIPPED *transparent huge pages are 'always'*",  # machine-specific: still a skip
    ):
        result.stdout.fnmatch_lines([line])


def test_outside_ci_the_skips_say_what_to_set(
    generated: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    result = generated.runpytest(*PLUGIN, "-rs")
    assert result.ret == pytest.ExitCode.OK
    assert result.parseoutcomes() == {"skipped": 4, "passed": 1}
    for line in (
        "SKIPPED *NEURALAB_DATA is not set (set NEURALAB_DATA=/path/to/datasets*",
        "SKIPPED *no chromium on this machine (install chromium and chromium-driver*",
        "SKIPPED *no mnist/ under NEURALAB_DATA=/nowhere (set NEURALAB_DATA=*",
    ):
        result.stdout.fnmatch_lines([line])


def test_under_ci_a_skipped_module_fails_the_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        test_needs_a_package="""
import pytest
pytest.importorskip("a_test_dependency_that_is_not_installed")

def test_never_collected():
    pass
""",
        test_other="def test_fine():\n    pass\n",
    )
    monkeypatch.delenv("CI", raising=False)
    result = pytester.runpytest(*PLUGIN, "-rs")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["SKIPPED*a_test_dependency_that_is_not_installed*.[[]test[]]*"])
    monkeypatch.setenv("CI", "true")
    result = pytester.runpytest(*PLUGIN)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        ["*test modules skipped under CI=true*", "test_needs_a_package.py: *not_installed*"]
    )
