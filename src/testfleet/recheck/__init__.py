"""Naming why a test failed in its lane: `culprit` is the pure search (a failed test run alone,
then bisected against what ran before it), `lanes` runs those searches in fresh lanes of the
run's stack and writes their findings into the run's outcome."""
