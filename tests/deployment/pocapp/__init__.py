"""A proof-of-concept Flower app for the deployment tests (not part of fedx).

The tests put ``tests/deployment`` on ``PYTHONPATH`` of every Flower process, so ``pocapp.apps``
is importable there although nothing was installed: the FAB carries only ``pyproject.toml``.
"""
