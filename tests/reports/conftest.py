"""The seeded warehouse of ``seed.py`` for every test in this folder."""

from tests.reports.seed import seeded, week  # noqa: F401
