"""Suite-wide: tests marked `slow` (scale, images, wheels) run only when
BLOBMOUNT_TEST_SLOW=1 (`.ci/run` sets it), so the default suite stays short."""

from __future__ import annotations

import os

import pytest

SLOW = os.environ.get("BLOBMOUNT_TEST_SLOW", "") not in ("", "0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if SLOW:
        return
    skip = pytest.mark.skip(reason="slow: BLOBMOUNT_TEST_SLOW=1 runs it (CI does)")
    for item in items:
        if item.get_closest_marker("slow") is not None:
            item.add_marker(skip)
