"""Shared fixtures. Tests that need Ray use the session-wide local instance in ``ray_session``."""

from __future__ import annotations

import os

# Ray resolves 127.0.0.1 to the machine's interface address unless its single-machine mode is on;
# set before Ray is imported, so every test instance (and its workers) stays on loopback.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import pytest  # noqa: E402
import torch


@pytest.fixture(autouse=True)
def _deterministic_torch() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def ray_session():
    """One small local Ray instance for every Ray test, on loopback, shut down at the end."""
    import ray

    if not ray.is_initialized():
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            configure_logging=False,
            log_to_driver=False,
        )
    yield ray
    ray.shutdown()
