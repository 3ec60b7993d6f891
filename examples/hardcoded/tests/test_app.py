import time
import urllib.request

import pytest


@pytest.mark.parametrize("attempt", range(8))
def test_app_answers_on_its_port(app_server, attempt):
    with urllib.request.urlopen(app_server, timeout=5) as response:
        assert response.read() == b"hello"
    time.sleep(0.05)
