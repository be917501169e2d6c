"""The security domain in-process, over memory storage: hashes, windows, settlement, redaction."""

from __future__ import annotations

import hashlib
import logging
import time

import gevent
import pytest

from cb.errors import NotFound
from cb.logs import redactor
from cb.security import InvalidApiKey, KeyStore, RateLimited, RateLimiter, estimate_tokens, scrub
from cb.security.keys import BUCKET, CACHE_TTL, LAYOUT_KEY, META, ApiKey, hash_key
from cb.storage.memory import MemoryStorage
from tests.harness import NoWholeBucketReads


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_only_the_sha256_of_a_key_is_stored():
    storage = MemoryStorage()
    record, plaintext = KeyStore(storage).create("ci")
    [entry] = storage.list("api_keys")
    assert entry.key == hashlib.sha256(plaintext.encode()).hexdigest()
    assert plaintext not in str(entry.value)
    assert record.prefix == plaintext[:10]


def test_revoke_unknown_id_is_not_found():
    with pytest.raises(NotFound):
        KeyStore(MemoryStorage()).revoke("key_missing")


def test_revoked_key_fails_after_the_cache_ttl_on_another_store():
    storage = MemoryStorage()
    mine, other = KeyStore(storage), KeyStore(storage)
    record, plaintext = mine.create("ci")
    assert other.authenticate(plaintext).id == record.id
    mine.revoke(record.id)
    other._cache.clear()  # what CACHE_TTL seconds do on another worker
    with pytest.raises(InvalidApiKey):
        other.authenticate(plaintext)


@pytest.fixture
def storage(connected_storage):
    return connected_storage


def test_revoke_finds_the_key_by_its_id_without_reading_every_key(storage):
    keys = KeyStore(NoWholeBucketReads(storage, BUCKET))
    created = [keys.create(f"key {i}") for i in range(20)]
    record, plaintext = created[7]
    assert keys.revoke(record.id).revoked
    with pytest.raises(InvalidApiKey, match="revoked"):
        KeyStore(storage).authenticate(plaintext)
    assert not KeyStore(storage).authenticate(created[8][1]).revoked  # only that one
    with pytest.raises(NotFound):
        keys.revoke("key_missing")


def test_keys_stored_before_the_index_are_indexed_once_and_then_revocable(storage):
    old = ApiKey(id="key_0123456789abcdef", name="from v1", prefix="cb-abcdefg", key_hash=hash_key("cb-old-plaintext"))
    storage.create(BUCKET, old.key_hash, old.to_dict())  # as a version without the index stored it
    keys = KeyStore(NoWholeBucketReads(storage, BUCKET))
    assert KeyStore(storage).migrate() == 1  # at a server's start: the one whole read, once per store
    assert storage.get(META, LAYOUT_KEY).value == {"version": 2}
    assert KeyStore(storage).migrate() == 0  # every later start: one get
    assert keys.revoke(old.id).revoked
    with pytest.raises(InvalidApiKey, match="revoked"):
        keys.authenticate("cb-old-plaintext")


def test_requests_that_find_a_key_stale_at_once_look_it_up_once():
    class SlowGets(MemoryStorage):
        gets = 0

        def get(self, bucket, key):
            SlowGets.gets += 1
            gevent.sleep(0.05)
            return super().get(bucket, key)

    storage = SlowGets()
    store = KeyStore(storage)
    record, plaintext = store.create("ci")
    store.authenticate(plaintext)
    time.sleep(CACHE_TTL + 0.05)
    store._touched.clear()  # last_used_at is written at most once a minute: not part of this
    before = SlowGets.gets
    found = [g.value for g in gevent.joinall([gevent.spawn(store._lookup, record.key_hash) for _ in range(32)])]
    assert SlowGets.gets - before == 1  # not one storage read per waiting request
    assert {k.id for k in found} == {record.id}


def test_requests_window_admits_exactly_the_limit_then_reopens():
    clock = Clock()
    limiter = RateLimiter(MemoryStorage(), clock=clock)
    admitted = 0
    for _ in range(8):
        try:
            limiter.acquire("k", rpm=5, tpm=None)
            admitted += 1
        except RateLimited as exc:
            assert exc.headers["x-ratelimit-remaining-requests"] == "0"
            assert 0 < exc.retry_after <= 60
    assert admitted == 5
    clock.now += 60
    assert limiter.acquire("k", rpm=5, tpm=None).requests.remaining == 4


def test_token_refusal_gives_the_request_back():
    limiter = RateLimiter(MemoryStorage(), clock=Clock())
    limiter.acquire("k", rpm=10, tpm=100, estimated_tokens=90)
    with pytest.raises(RateLimited) as caught:
        limiter.acquire("k", rpm=10, tpm=100, estimated_tokens=20)
    assert "tokens" in caught.value.message
    assert limiter.acquire("k", rpm=10, tpm=100, estimated_tokens=5).requests.used == 2


def test_settling_replaces_the_estimate_with_real_usage():
    limiter = RateLimiter(MemoryStorage(), clock=Clock())
    reservation = limiter.acquire("k", rpm=None, tpm=1000, estimated_tokens=600)
    reservation.settle(50)
    reservation.settle(999)  # a second settlement is ignored
    assert limiter.acquire("k", rpm=None, tpm=1000, estimated_tokens=900).tokens.used == 950


def test_estimate_counts_prompt_characters_and_max_tokens():
    body = {
        "messages": [{"role": "user", "content": "x" * 400}, {"role": "user", "content": [{"text": "y" * 40}]}],
        "max_tokens": 50,
    }
    assert estimate_tokens(body) == 110 + 50


@pytest.mark.parametrize(
    "body", [{"messages": True}, {"messages": [None, 3]}, {"input": {"a": 1}}, {"max_tokens": "9"}]
)
def test_estimate_survives_malformed_bodies(body):
    assert estimate_tokens(body) == 0


@pytest.mark.parametrize(
    "text",
    [
        "Authorization: Bearer abcdefgh12345678",
        '{"headers": {"api-key": "hunter2hunter2"}}',
        "Incorrect API key provided: sk-proj-abcdefghijkl",
        "https://generativelanguage.googleapis.com/v1beta/models?key=AIzaSyABCDEFGHIJKLMNOP",
    ],
)
def test_scrub_removes_key_shaped_strings(text):
    assert "[REDACTED]" in scrub(text)
    for secret in ("abcdefgh12345678", "hunter2hunter2", "sk-proj-abcdefghijkl", "AIzaSyABCDEFGHIJKLMNOP"):
        assert secret not in scrub(text)


def test_log_records_are_redacted(caplog):
    redactor.add("my-very-own-secret")
    logger = logging.getLogger("circuit_breaker.test")
    logger.addFilter(redactor)
    try:
        with caplog.at_level(logging.INFO):
            logger.info("upstream said %s", "bad key my-very-own-secret")
    finally:
        logger.removeFilter(redactor)
    assert "my-very-own-secret" not in caplog.text
