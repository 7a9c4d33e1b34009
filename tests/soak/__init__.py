"""The soak test of issue 4: run `python -m tests.soak.soak --help`."""
