"""The main thread waiting on worker threads (`threads.wait_all`, `stack.in_parallel`): results,
errors, and a Ctrl-C the kernel delivered to a worker thread; and the threads that read a
service's output."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from concurrent.futures import Future

import pytest

from testfleet.processes import _copy_redacted
from testfleet.stack import in_parallel
from testfleet.threads import wait_all


def until_the_main_thread_waits() -> None:
    """Return once the main thread is blocked in a lock acquire (threading's Condition.wait),
    where only its own code would notice a signal."""
    main = threading.main_thread().ident
    assert main is not None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        code = getattr(sys._current_frames().get(main), "f_code", None)
        if code is not None and (code.co_filename, code.co_name) == (threading.__file__, "wait"):
            time.sleep(0.1)  # from Condition.wait's Python lines into the acquire itself
            return
        time.sleep(0.01)


def test_results_come_in_task_order() -> None:
    """Results are in the order of the tasks, not the order they finished in."""
    slow_started = threading.Event()

    def slow() -> str:
        slow_started.set()
        time.sleep(0.2)
        return "slow"

    def fast() -> str:
        assert slow_started.wait(5)
        return "fast"

    assert in_parallel([slow, fast]) == ["slow", "fast"]


def test_the_first_error_is_raised_after_every_task_ended() -> None:
    """With several failures, the first task's error is raised, once all tasks have ended."""
    ended: list[str] = []

    def fails(name: str, delay: float) -> None:
        time.sleep(delay)
        ended.append(name)
        raise ValueError(name)

    with pytest.raises(ValueError, match="first"):
        in_parallel([lambda: fails("first", 0.2), lambda: fails("second", 0.0)])
    assert sorted(ended) == ["first", "second"]


def test_wait_all_gives_up_at_its_timeout() -> None:
    """With a future that never finishes, wait_all returns False after about its timeout."""
    never: Future[None] = Future()
    done: Future[None] = Future()
    done.set_result(None)
    began = time.monotonic()
    assert not wait_all([never, done], timeout=0.3)
    assert time.monotonic() - began >= 0.3  # it waited its timeout (never for the future)
    assert wait_all([done])


def test_ctrl_c_on_a_worker_thread_interrupts_in_parallel_at_once() -> None:
    """A SIGINT the kernel delivered to a worker thread makes in_parallel raise
    KeyboardInterrupt while another task still blocks: shown by events (the blocked task was
    alive when the interrupt arrived), not by a clock that a loaded machine slows."""
    release = threading.Event()
    blocked: list[threading.Thread] = []

    def blocks() -> None:
        blocked.append(threading.current_thread())
        release.wait(timeout=10)

    def presses_ctrl_c() -> None:
        until_the_main_thread_waits()
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)

    try:
        with pytest.raises(KeyboardInterrupt):
            in_parallel([blocks, presses_ctrl_c])
        assert not release.is_set()
        assert blocked[0].is_alive(), "the interrupt waited for the blocked task"
    finally:
        release.set()
        for thread in blocked:
            thread.join(timeout=5)
    assert not blocked[0].is_alive()


def test_a_log_on_a_full_disk_does_not_stop_the_output_being_read():
    """A service's output is read to its end even when its log cannot be written (/dev/full
    fails every write with ENOSPC): unread, a pipe fills and the service blocks."""
    reader, writer = os.pipe()
    payload = b"x" * 1023 + b"\n"
    total = 1024 * 1024  # far over a pipe's 64 KB buffer

    def produce() -> None:
        with os.fdopen(writer, "wb") as out:
            for _ in range(total // len(payload)):
                out.write(payload)

    producer = threading.Thread(target=produce)
    producer.start()
    with os.fdopen(reader, "rb") as source:
        _copy_redacted(source, os.open("/dev/full", os.O_WRONLY), [b"secret"])
    producer.join(timeout=10)
    assert not producer.is_alive()
