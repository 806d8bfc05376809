"""Shared test settings: hypothesis profiles. `pytest --hypothesis-profile=stress` runs the
property tests with many more draws (for hunting edge cases, not for CI)."""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "default", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "stress", max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("default")


KINDS = ("property", "montecarlo", "e2e")


def pytest_collection_modifyitems(items):
    """A test of none of the slower kinds is a unit test: `pytest -m unit` runs the fast part."""
    import pytest

    for item in items:
        if not any(item.get_closest_marker(kind) for kind in KINDS):
            item.add_marker(pytest.mark.unit)
