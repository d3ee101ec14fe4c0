"""Password hashing (token_service/security.py): argon2id by libsodium, compatible with the
hashes argon2-cffi wrote before it, one computation at a time per process, whatever the number
of threads logging in at once."""

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


# "correct horse battery staple" as argon2-cffi wrote it with today's parameters, and with weaker
# ones (t=1, m=8 MiB), before the switch to libsodium.
ARGON2_CFFI_CURRENT = "$argon2id$v=19$m=19456,t=2,p=1$WjO1h+JbFih/Qqcw8e07MQ$r6BgvcRdTP1fINVDw+l6OerScGtUyKwBY3HtoPcmA4s"  # noqa: E501
ARGON2_CFFI_WEAKER = "$argon2id$v=19$m=8192,t=1,p=1$hcIDZ/78tGTww0uANLzFFQ$ZG1+kojepdWx5ULFhJc1WNgPn39JsqiTrwDP7aX5Xjo"  # noqa: E501


def test_hashes_written_before_libsodium_still_verify():
    hasher = security.PASSWORD_HASHER
    for stored in (ARGON2_CFFI_CURRENT, ARGON2_CFFI_WEAKER):
        assert verify_password(stored, "correct horse battery staple")
        assert not verify_password(stored, "correct horse battery stapl")
    # Same parameters: kept as it is. Weaker ones: rewritten at the next login.
    assert not hasher.check_needs_rehash(ARGON2_CFFI_CURRENT)
    assert hasher.check_needs_rehash(ARGON2_CFFI_WEAKER)
    assert not hasher.check_needs_rehash(hash_password("x"))


def test_a_hash_has_the_owasp_parameters_and_a_fresh_salt():
    first, second = hash_password("same"), hash_password("same")
    assert first.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert first != second  # a random salt each time
    assert verify_password(first, "same") and verify_password(second, "same")


def test_odd_passwords_and_broken_hashes():
    stored = hash_password("pässwörd\x00tail")
    assert verify_password(stored, "pässwörd\x00tail")
    assert not verify_password(stored, "pässwörd")  # no truncation at NUL
    assert not verify_password(stored, "")
    broken = ["", "$argon2id$v=19$m=19456,t=2,p=1$garbage", stored[:-4], "$" + "a" * 300]
    for text in broken:
        assert not verify_password(text, "pässwörd\x00tail")
    # argon2d, which libsodium does not compute: refused like a wrong password, not an error
    argon2d = ARGON2_CFFI_CURRENT.replace("$argon2id$", "$argon2d$")
    assert not verify_password(argon2d, "correct horse battery staple")


def test_an_unknown_customer_still_costs_one_real_verification(monkeypatch):
    # No user enumeration by timing: a missing hash verifies against the dummy one, whose
    # parameters are today's, through the same libsodium call.
    calls = []
    real = security.PASSWORD_HASHER.verify
    monkeypatch.setattr(
        security.PASSWORD_HASHER, "verify", lambda h, p: calls.append(h) or real(h, p)
    )
    assert not verify_password(None, "correct horse battery staple")
    assert calls == [security._DUMMY_HASH]
    assert not security.PASSWORD_HASHER.check_needs_rehash(security._DUMMY_HASH)


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
