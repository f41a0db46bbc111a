"""Hypothesis profiles, GPU gating and tiny shared fixtures.

Profiles: ``HYPOTHESIS_PROFILE=dev|ci|thorough``. Hypothesis itself loads its built-in ``ci`` profile when
``CI=true``; we register our settings under that name too, so CI gets them (derandomized, no deadline).
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

_common = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("dev", max_examples=25, **_common)
settings.register_profile("ci", max_examples=25, derandomize=True, print_blob=True, **_common)
settings.register_profile("thorough", max_examples=500, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") == "true" else "dev"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (gpu marker)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _torch_threads() -> None:
    # Tiny test models: intra-op threads only add synchronisation (about 10x slower measured on a busy 2-core box).
    torch.set_num_threads(1)
