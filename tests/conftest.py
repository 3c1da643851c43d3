"""Test order: the longest files first, so that `make test`'s workers (``-n 3 --dist loadfile``) do not end the run
with one of them still in a long file that started last.

pytest-xdist hands out whole files in collection order, two to each worker at first, then one to whichever
worker is free. By default pytest-xdist 3 first sorts the files by their number of tests
(``--loadscope-reorder``): that would start the long files, most of which hold one to three tests, after nearly
every other file, so :func:`pytest_configure` turns it off. Collected alphabetically, the quickstart starts after
most other files; here the files below go first, in this order, measured with ``--durations`` (longest first, the
two quickstart parts on two workers). The other files keep their order. Outside xdist this changes only the order.
"""

from __future__ import annotations

import pytest

LONGEST_FIRST = (
    "tests/examples/test_finance_antifraud.py",
    "tests/test_quickstart.py",
    "tests/deployment/test_deploy_vertical_dropout.py",
    "tests/test_quickstart_later.py",
    "tests/deployment/test_deploy_masking.py",
    "tests/deployment/test_deploy_fedx.py",
    "tests/deployment/test_deploy_fedx_faults.py",
    "tests/deployment/test_deploy_vertical.py",
    "tests/deployment/test_deploy_gbdt.py",
    "tests/deployment/test_deploy_gbdt_dropout.py",
    "tests/examples/test_antifraud_masking.py",
    "tests/flower/test_resume_and_dp_e2e.py",
    "tests/examples/test_medical_insurance.py",
)


def pytest_configure(config: pytest.Config) -> None:
    if hasattr(config.option, "loadscopereorder"):   # pytest-xdist's controller: keep the order below
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}

    def key(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return rank.get(path, len(rank))

    items.sort(key=key)   # stable: the tests of a file, and the other files, keep their order
