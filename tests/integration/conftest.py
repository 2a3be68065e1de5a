import pytest

from tests.integration.daemons import DaemonFactory


@pytest.fixture
def daemons():
    factory = DaemonFactory()
    try:
        yield factory
    finally:
        factory.cleanup()
