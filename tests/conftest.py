"""Test session wiring. The test tree mirrors the package; fixtures live in tests/fixtures."""

pytest_plugins = [
    "tests.fixtures.broker",
    "tests.fixtures.registry",
    "tests.fixtures.city",
]

#: Files whose tests take minutes: collected first, so that with two workers (pyproject's
#: addopts) they start at once instead of being the last to finish.
LONG_FIRST = ("tests/routing/test_exactly_once.py", "tests/e2e/test_faults.py")


def pytest_collection_modifyitems(session, config, items) -> None:  # noqa: ANN001 (pytest hook)
    items.sort(key=lambda item: not item.nodeid.startswith(LONG_FIRST))
