"""Root conftest: fixtures both tests/ and integration/ use (a real redis-server per test)."""

pytest_plugins = ["integration.fixtures"]
