import time

import pytest


@pytest.mark.parametrize("n", range(1, 9))
def test_counts_only_its_own_keys(cache, n):
    for i in range(n):
        cache.set(f"item:{i}", i)
    time.sleep(0.05)  # the work a real test does between writing and counting
    assert cache.dbsize() == n
