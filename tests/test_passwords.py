"""Password hashing (token_service/security.py): argon2id, one computation at a time per
process, whatever the number of threads logging in at once."""

from __future__ import annotations

import threading
import time

from token_service import security
from token_service.security import hash_password, verify_password


def test_a_hash_verifies_and_a_wrong_or_missing_one_does_not():
    stored = hash_password("correct horse battery staple")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "correct horse battery staple")
    assert not verify_password(stored, "wrong")
    assert not verify_password(None, "correct horse battery staple")  # still one verification
    assert not verify_password("not a hash", "x")


def test_hashes_run_one_at_a_time_across_threads(monkeypatch):
    running, most, lock = [0], [0], threading.Lock()
    real_verify, real_hash = security.PASSWORD_HASHER.verify, security.PASSWORD_HASHER.hash

    def timed(real):
        def run(*args):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.02)
            with lock:
                running[0] -= 1
            return real(*args)

        return run

    class Timed:  # the hasher, counting how many of its computations overlap
        verify, hash = staticmethod(timed(real_verify)), staticmethod(timed(real_hash))

    monkeypatch.setattr(security, "PASSWORD_HASHER", Timed())
    stored = real_hash("pw")
    work = [lambda: verify_password(stored, "pw"), lambda: hash_password("pw")] * 3
    threads = [threading.Thread(target=job) for job in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert most[0] == 1
