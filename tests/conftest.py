"""Shared fixtures. Tests that need Ray use the session-wide local instance in ``ray_session``."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic_torch() -> None:
    torch.manual_seed(0)
