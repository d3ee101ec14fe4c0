"""A worker's slots (token_service/slots.py): at most n requests run the app, a slot goes to the
request that has waited longest, and what a slot keeps outlives the thread that held it."""

from __future__ import annotations

import threading
import time

from token_service import slots
from token_service.slots import Slots


def test_a_slot_keeps_its_namespace_across_threads_and_a_thread_outside_has_its_own():
    gate = Slots(1)
    seen = []

    def in_slot():
        gate.enter()
        try:
            seen.append(slots.local())
        finally:
            gate.leave()

    for _ in range(2):
        thread = threading.Thread(target=in_slot)
        thread.start()
        thread.join()
    assert seen[0] is seen[1]  # two threads, one after the other, the same slot
    assert slots.local() is not seen[0]  # this thread holds no slot: its own
    assert slots.local() is slots.local()


def test_a_slot_goes_to_the_longest_waiting_request_never_to_a_newcomer():
    gate = Slots(1)
    gate.enter()  # this thread holds the one slot
    order, started = [], []

    def request(name: str) -> None:
        gate.enter()
        order.append(name)
        gate.leave()

    for name in ("first", "second", "third"):
        thread = threading.Thread(target=request, args=(name,))
        thread.start()
        started.append(thread)
        time.sleep(0.05)  # each is waiting before the next arrives
    gate.leave()  # handed to "first", though this thread runs on and asks again at once:
    gate.enter()  # it queues behind "second" and "third"
    order.append("newcomer")
    gate.leave()
    for thread in started:
        thread.join(10)
    assert order == ["first", "second", "third", "newcomer"]
