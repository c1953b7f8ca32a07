import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

FIXTURES = Path(__file__).parent / "fixtures"
H100_FIXTURE = FIXTURES / "h100-580-no-unload"


@pytest.fixture
def h100_root() -> Path:
    return H100_FIXTURE


@pytest.fixture
def snapshot(tmp_path):
    from snapshot_builder import healthy_node

    return healthy_node(tmp_path / "node")
