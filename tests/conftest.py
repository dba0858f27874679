import pytest

@pytest.fixture(scope="session")
def zoo_cache(tmp_path_factory):
    """One trained zoo per test session, shared by every test that needs a zoo model."""
    return tmp_path_factory.mktemp("zoo")
