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
