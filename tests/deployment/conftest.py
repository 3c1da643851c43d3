"""Fixtures of the deployment tests."""

from fedx_deploy_support import processes  # noqa: F401 - the `processes` fixture
