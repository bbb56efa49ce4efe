"""Test session wiring. The test tree mirrors the package; fixtures live in tests/fixtures."""

pytest_plugins = [
    "tests.fixtures.broker",
    "tests.fixtures.registry",
    "tests.fixtures.city",
]
