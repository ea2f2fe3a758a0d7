"""Hypothesis profiles: CI replays the same examples every run (a red CI must mean a change broke
something); elsewhere each run explores new ones. .ci/run selects the "ci" profile."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
