"""Shared by tests/unit and tests/integration: ``helpers`` (real processes, never mocks) is importable."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
