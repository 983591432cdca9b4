import pytest


@pytest.fixture(scope="session", autouse=True)
def ddpmkit_cache(tmp_path_factory):
    """Every test writes ddpmkit's cache (real-data feature statistics) to a temporary folder."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("ddpmkit-cache")
        mp.setenv("DDPMKIT_CACHE", str(path))
        yield path
