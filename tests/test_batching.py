"""The micro-batcher: coalescing, ordering, bounds and failure, with a fake batch function."""

import threading
import time

import pytest

from clip_vectorize.errors import OverloadedError
from clip_vectorize.inference.batching import BatchLimits, MicroBatcher


def make_batcher(run_batch=None, **limits):
    options = {"max_batch": 8, "max_wait_s": 0.005, "max_queue": 100, **limits}
    return MicroBatcher(run_batch or (lambda items: [item * 10 for item in items]), BatchLimits(**options), name="test")


def test_each_caller_gets_the_results_of_its_own_items_in_order():
    batcher = make_batcher()
    assert batcher.run([1, 2, 3]) == [10, 20, 30]
    batcher.close()


def test_concurrent_requests_share_forward_passes():
    gate = threading.Event()

    def slow_batch(items):
        gate.wait(5)  # the first pass blocks until every caller has queued
        return [item * 10 for item in items]

    batcher, sizes = make_batcher(slow_batch), []
    batcher.on_batch = sizes.append
    results = {}
    callers = [threading.Thread(target=lambda n=n: results.setdefault(n, batcher.run([n]))) for n in range(12)]
    for caller in callers:
        caller.start()
    while not sizes or sizes[0] + batcher.depth < 12:  # all in the blocked pass or queued
        time.sleep(0.001)
    gate.set()
    for caller in callers:
        caller.join()
    assert results == {n: [n * 10] for n in range(12)}
    assert max(sizes) > 1 and len(sizes) <= 3  # 12 items, batches of at most 8
    batcher.close()


@pytest.mark.timeout(10)
def test_a_full_batch_goes_at_once_without_waiting_for_max_wait():
    batcher = make_batcher(max_batch=2, max_wait_s=60)
    assert batcher.run([1, 2]) == [10, 20]  # would hang for a minute if it waited
    batcher.close()


@pytest.mark.timeout(10)
def test_the_first_request_after_an_idle_moment_does_not_wait_for_company():
    batcher = make_batcher(max_batch=8, max_wait_s=60)
    assert batcher.run([1]) == [10]  # would hang for a minute if a lone request waited for company
    assert batcher.run([2, 3]) == [20, 30]  # and again after the next idle moment, several items at once
    batcher.close()


def test_items_that_queue_while_a_pass_runs_wait_for_company():
    gate, sizes = threading.Event(), []
    batcher = make_batcher(lambda items: (gate.wait(5), [item * 10 for item in items])[1], max_batch=2, max_wait_s=30)
    batcher.on_batch = sizes.append
    first = batcher.submit([1])  # the pass that blocks on the gate
    while batcher.depth:
        time.sleep(0.001)
    second = batcher.submit([2])  # queued while a pass runs
    gate.set()
    third = batcher.submit([3])  # joins the second's pass, which waits for it (and then is full)
    assert [future.result(5) for future in first + second + third] == [10, 20, 30]
    assert sizes == [1, 2]
    batcher.close()


def test_a_request_that_would_overflow_the_queue_is_refused_at_once():
    gate = threading.Event()
    batcher = make_batcher(lambda items: gate.wait(5) and items, max_batch=1, max_queue=3)
    first = batcher.submit([1])  # taken by the worker, which blocks on the gate
    while batcher.depth:
        time.sleep(0.001)
    batcher.submit([2, 3, 4])  # fills the queue
    with pytest.raises(OverloadedError, match="CLIP_QUEUE_SIZE=3"):
        batcher.submit([5])
    gate.set()
    assert first[0].result(5) == 1
    batcher.close()


def test_a_request_larger_than_the_bound_still_gets_into_an_empty_queue():
    batcher = make_batcher(max_queue=3)
    assert batcher.run([1, 2, 3, 4, 5]) == [10, 20, 30, 40, 50]
    batcher.close()


def test_a_failing_batch_fails_its_callers_and_the_worker_keeps_serving():
    def fragile(items):
        if 13 in items:
            raise RuntimeError("bad batch")
        return items

    batcher = make_batcher(fragile, max_batch=1)
    with pytest.raises(RuntimeError, match="bad batch"):
        batcher.run([13])
    assert batcher.run([7]) == [7]
    batcher.close()


def test_close_finishes_queued_work_then_refuses_more():
    batcher = make_batcher(max_wait_s=0.05)
    futures = batcher.submit([1, 2, 3])
    batcher.close()
    assert [future.result(1) for future in futures] == [10, 20, 30]
    with pytest.raises(OverloadedError):
        batcher.submit([4])
