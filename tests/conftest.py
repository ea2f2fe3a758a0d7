"""Hypothesis profiles: CI replays the same examples every run (a red CI must mean a change broke
something); elsewhere each run explores new ones. .ci/run selects the "ci" profile."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# readline, which pytest imports, puts COLUMNS=80 and LINES=24 in the C environment (not in
# os.environ): every command the tests start inherited them, and reports folded to 80 columns.
# What the user did not set is taken out again.
for _name in ("COLUMNS", "LINES"):
    if _name not in os.environ:
        os.unsetenv(_name)
