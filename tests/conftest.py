"""Suite-wide settings.

Every tensor in the suite is tiny, so one intra-op thread is fastest: with two OpenMP threads on
a machine that is busy with other work, each small op can wait tens of milliseconds for the
second thread, which makes the suite several times slower.
"""

import torch

torch.set_num_threads(1)


import os  # noqa: E402

import pytest  # noqa: E402

# pytester: the CI rules are tested on generated test files. ci_rules: under CI=true a skipped
# real-data or browser test fails the run, and hypothesis is derandomised; elsewhere skip
# reasons say what to set (tests/ci_rules.py).
pytest_plugins = ("pytester", "ci_rules")


@pytest.fixture(autouse=True, scope="session")
def _private_token_cache(tmp_path_factory: pytest.TempPathFactory):
    """Token caches go to a fresh folder, never to the user's ~/.cache/neuralab."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NEURALAB_CACHE", str(tmp_path_factory.mktemp("neuralab-cache")))
        yield


# The fault table (issue: reliability): tests that try a fault or a hostile input record one row
# after their assertions pass; the table is printed at the end of the run and written to
# $NEURALAB_FAULT_TABLE when that is set.
FAULTS: list[tuple[str, int, str, str]] = []


@pytest.fixture
def fault_table():
    """record(fault, cases, outcome, data_lost="nothing") — call it after the assertions."""

    def record(fault: str, cases: int, outcome: str, data_lost: str = "nothing") -> None:
        FAULTS.append((fault, cases, outcome, data_lost))

    return record


def fault_table_markdown() -> str:
    lines = [
        "| fault or hostile input | cases | what happened | data lost |",
        "| --- | ---: | --- | --- |",
    ]
    merged: dict[tuple[str, str, str], int] = {}  # parametrised cases add up in one row
    for fault, cases, outcome, lost in FAULTS:
        merged[(fault, outcome, lost)] = merged.get((fault, outcome, lost), 0) + cases
    lines += [f"| {f} | {c} | {o} | {d} |" for (f, o, d), c in merged.items()]
    total = sum(merged.values())
    return (
        "\n".join(lines)
        + f"\n\n{len(merged)} faults, {total} cases (rows come only from tests that passed).\n"
    )


def pytest_terminal_summary(terminalreporter) -> None:
    if not FAULTS:
        return
    table = fault_table_markdown()
    terminalreporter.write_sep("=", "fault table (faults tried by this run's passing tests)")
    terminalreporter.write(table)
    if os.environ.get("NEURALAB_FAULT_TABLE"):
        with open(os.environ["NEURALAB_FAULT_TABLE"], "w", encoding="utf-8") as handle:
            handle.write(table)
