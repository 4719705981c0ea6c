"""Login throttling: per account, per address, backoff, windows, memory bound, threads."""

from __future__ import annotations

import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.panel.security.throttle import (
    ACCOUNT_LIMIT,
    ADDRESS_LIMIT,
    BASE_DELAY,
    MAX_DELAY,
    WINDOW,
    LoginThrottle,
)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make() -> tuple[LoginThrottle, Clock]:
    clock = Clock()
    return LoginThrottle(clock=clock), clock


def fail(
    throttle: LoginThrottle, times: int, account: str = "alice", address: str = "198.51.100.7"
) -> None:
    for _ in range(times):
        throttle.record_failure(account, address)


def test_policy_constants_are_those_of_the_spec() -> None:
    assert (ACCOUNT_LIMIT, ADDRESS_LIMIT) == (5, 20)
    assert (WINDOW, BASE_DELAY, MAX_DELAY) == (900.0, 30.0, 900.0)


def test_nothing_recorded_means_no_wait() -> None:
    throttle, _ = make()
    assert throttle.retry_after("alice", "198.51.100.7") == 0.0


def test_the_fifth_failure_locks_the_account_for_30_seconds() -> None:
    throttle, clock = make()
    fail(throttle, ACCOUNT_LIMIT - 1)
    assert throttle.retry_after("alice", "198.51.100.7") == 0.0
    fail(throttle, 1)
    assert throttle.retry_after("alice", "198.51.100.7") == BASE_DELAY
    assert throttle.retry_after("alice", "203.0.113.9") == BASE_DELAY  # any address
    assert throttle.retry_after("bob", "198.51.100.7") == 0.0  # other accounts: not locked
    clock.advance(10)
    assert throttle.retry_after("alice", "198.51.100.7") == BASE_DELAY - 10
    clock.advance(BASE_DELAY - 10)
    assert throttle.retry_after("alice", "198.51.100.7") == 0.0


def test_each_further_failure_doubles_the_lock_up_to_15_minutes() -> None:
    throttle, clock = make()
    fail(throttle, ACCOUNT_LIMIT)
    waits = []
    for _ in range(8):
        wait = throttle.retry_after("alice", "x")
        waits.append(wait)
        clock.advance(wait)
        fail(throttle, 1)
    assert waits == [30.0, 60.0, 120.0, 240.0, 480.0, 900.0, 900.0, 900.0]


def test_a_quiet_window_after_a_lock_starts_afresh() -> None:
    throttle, clock = make()
    fail(throttle, ACCOUNT_LIMIT)
    clock.advance(BASE_DELAY + WINDOW - 1)
    fail(throttle, 1)  # still within a window of the lock: escalates
    assert throttle.retry_after("alice", "x") == 2 * BASE_DELAY
    clock.advance(2 * BASE_DELAY + WINDOW)
    fail(throttle, 1)
    assert throttle.retry_after("alice", "x") == 0.0
    fail(throttle, ACCOUNT_LIMIT - 1)
    assert throttle.retry_after("alice", "x") == BASE_DELAY


def test_failures_older_than_the_window_are_forgotten() -> None:
    throttle, clock = make()
    fail(throttle, ACCOUNT_LIMIT - 1)
    clock.advance(WINDOW + 1)
    fail(throttle, 1)
    assert throttle.retry_after("alice", "198.51.100.7") == 0.0
    fail(throttle, ACCOUNT_LIMIT - 2)
    assert throttle.retry_after("alice", "198.51.100.7") == 0.0
    fail(throttle, 1)
    assert throttle.retry_after("alice", "198.51.100.7") == BASE_DELAY


def test_account_names_are_compared_case_insensitively() -> None:
    throttle, _ = make()
    for name in ("Alice", "ALICE", "alice", " alice", "aLiCe"):
        throttle.record_failure(name, "198.51.100.7")
    assert throttle.retry_after("alice", "203.0.113.9") == BASE_DELAY
    assert throttle.retry_after("ALICE", "203.0.113.9") == BASE_DELAY


def test_an_address_trying_many_accounts_is_locked() -> None:
    throttle, clock = make()
    for i in range(ADDRESS_LIMIT - 1):
        throttle.record_failure(f"user{i}", "198.51.100.7")
    assert throttle.retry_after("someone", "198.51.100.7") == 0.0
    throttle.record_failure("user-last", "198.51.100.7")
    assert throttle.retry_after("someone", "198.51.100.7") == BASE_DELAY
    assert throttle.retry_after("someone", "198.51.100.8") == 0.0
    clock.advance(BASE_DELAY)
    assert throttle.retry_after("someone", "198.51.100.7") == 0.0


def test_success_clears_the_account_but_not_the_address() -> None:
    throttle, _ = make()
    fail(throttle, ACCOUNT_LIMIT - 1)
    throttle.record_success("Alice", "198.51.100.7")
    fail(throttle, ACCOUNT_LIMIT - 1)
    assert throttle.retry_after("alice", "203.0.113.9") == 0.0  # counting started again

    throttle, _ = make()
    for i in range(ADDRESS_LIMIT):
        throttle.record_failure(f"user{i}", "198.51.100.7")
    throttle.record_success("user0", "198.51.100.7")
    assert throttle.retry_after("user0", "198.51.100.7") == BASE_DELAY  # the address's lock


def test_success_also_lifts_an_account_lock() -> None:
    # The route never checks a password while locked; a success elsewhere (an admin
    # resetting it, say) still leaves a clean account.
    throttle, _ = make()
    fail(throttle, ACCOUNT_LIMIT, address="198.51.100.1")
    throttle.record_success("alice", "203.0.113.9")
    assert throttle.retry_after("alice", "203.0.113.9") == 0.0


def test_ipv6_clients_are_counted_per_64_and_mapped_ipv4_as_ipv4() -> None:
    throttle, _ = make()
    for i in range(ADDRESS_LIMIT):
        throttle.record_failure(f"user{i}", f"2001:db8:1:2::{i + 1:x}")
    assert throttle.retry_after("x", "2001:db8:1:2:ffff::1") == BASE_DELAY
    assert throttle.retry_after("x", "2001:db8:1:3::1") == 0.0

    throttle, _ = make()
    for i in range(ADDRESS_LIMIT):
        throttle.record_failure(f"user{i}", "::ffff:198.51.100.7")
    assert throttle.retry_after("x", "198.51.100.7") == BASE_DELAY


def test_addresses_that_are_not_ips_are_counted_as_given() -> None:
    throttle, _ = make()
    for i in range(ADDRESS_LIMIT):
        throttle.record_failure(f"user{i}", "testclient")
    assert throttle.retry_after("x", "testclient") == BASE_DELAY
    assert throttle.retry_after("x", "other") == 0.0


def test_memory_is_bounded_by_dropping_the_oldest_keys() -> None:
    clock = Clock()
    throttle = LoginThrottle(clock=clock, max_keys=3)
    fail(throttle, ACCOUNT_LIMIT, account="victim", address="198.51.100.1")
    assert throttle.retry_after("victim", "203.0.113.1") == BASE_DELAY
    for i in range(2):
        throttle.record_failure(f"user{i}", f"198.51.100.{10 + i}")
    assert throttle.retry_after("victim", "203.0.113.1") == BASE_DELAY  # 3 keys: kept
    throttle.record_failure("user2", "198.51.100.20")
    assert throttle.retry_after("victim", "203.0.113.1") == 0.0  # the oldest went


def test_the_most_recently_failed_key_survives_eviction() -> None:
    throttle = LoginThrottle(clock=Clock(), max_keys=2)
    fail(throttle, ACCOUNT_LIMIT - 1, account="a", address="198.51.100.1")
    throttle.record_failure("b", "198.51.100.2")
    throttle.record_failure("a", "198.51.100.1")  # a is now the newest
    throttle.record_failure("c", "198.51.100.3")  # b goes, not a
    assert throttle.retry_after("a", "203.0.113.1") == BASE_DELAY


def test_concurrent_failures_are_all_counted() -> None:
    throttle = LoginThrottle(clock=Clock())
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        barrier.wait()
        for i in range(50):
            throttle.record_failure(f"user{n}-{i}", f"10.0.{n}.{i}")
            throttle.record_failure("shared", f"10.1.{n}.{i}")
            throttle.retry_after("shared", "10.2.0.1")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert throttle.retry_after("shared", "10.2.0.1") == MAX_DELAY


@settings(deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(
                st.just("fail"),
                st.sampled_from(["a", "b", "A"]),
                st.sampled_from(["1.1.1.1", "2.2.2.2"]),
            ),
            st.tuples(st.just("ok"), st.sampled_from(["a", "b"]), st.sampled_from(["1.1.1.1"])),
            st.tuples(st.just("wait"), st.floats(0, 2000), st.just("")),
        ),
        max_size=80,
    )
)
def test_the_wait_is_always_between_zero_and_the_cap(steps: list[tuple[str, object, str]]) -> None:
    throttle, clock = make()
    for kind, value, address in steps:
        if kind == "fail":
            throttle.record_failure(str(value), address)
        elif kind == "ok":
            throttle.record_success(str(value), address)
        else:
            assert isinstance(value, float)
            clock.advance(value)
        for account in ("a", "b"):
            for addr in ("1.1.1.1", "2.2.2.2", "3.3.3.3"):
                assert 0.0 <= throttle.retry_after(account, addr) <= MAX_DELAY
