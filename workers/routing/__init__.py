"""The storage side: the route task files each result into output, clip-failed or errors.

No torch here (an import-linter contract in pyproject.toml keeps it so): a storage host runs
without the model stack installed.
"""
