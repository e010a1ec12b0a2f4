"""The blob store: key validation, atomic writes, concurrency, attempts, purge and symlinks."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from pixmill.core.blobs import (
    BlobKey,
    BlobStoreError,
    InvalidBlobKeyError,
    LocalBlobStore,
    StaleAttemptError,
    is_valid_filename,
    safe_filename,
)
from pixmill.core.errors import NotFoundError

JOB = "0123456789abcdef0123456789abcdef"
OTHER_JOB = "fedcba9876543210fedcba9876543210"


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def files_under(path: Path) -> list[str]:
    """Every non-folder entry under `path`, relative, without following links."""
    found = []
    for dirpath, dirnames, filenames in os.walk(path):
        found += [os.path.relpath(os.path.join(dirpath, n), path) for n in filenames]
        found += [
            os.path.relpath(os.path.join(dirpath, d), path)
            for d in dirnames
            if os.path.islink(os.path.join(dirpath, d))
        ]
    return sorted(found)


def age_tree(path: Path, seconds_ago: float) -> None:
    """Set the mtime of `path` and everything below it (links themselves) into the past."""
    when = time.time() - seconds_ago
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (when, when), follow_symlinks=False)
    os.utime(path, (when, when), follow_symlinks=False)


# -- key validation ------------------------------------------------------------------------

HOSTILE_FILENAMES = [
    "",
    ".",
    "..",
    "../x.png",
    "../../etc/passwd",
    "a/b.png",
    "a\\b.png",
    "/etc/passwd",
    "C:\\x.png",
    "a\x00b.png",
    "x.png\x00",
    "a" * 201,
    "a..b",
    ".hidden",
    ".tmp-abc",
    ".promoted",
    ".trash-x",
    "-rf",
    "_x",
    " x.png",
    "x y.png",
    "x.png\n",
    "\u00fc.png",
    "\u2215etc\u2215passwd",
    "%2e%2e%2fx",
    "x:y",
]

HOSTILE_JOB_IDS: list[Any] = [
    "",
    "..",
    "../" + JOB[3:],
    JOB.upper(),
    "g" * 32,
    JOB[:-1],
    JOB + "0",
    JOB + "\n",
    JOB[:-1] + "\x00",
    "/" + JOB[1:],
    JOB[:16] + "/" + JOB[17:],
    JOB[:16] + "\\" + JOB[17:],
    None,
    12345,
]


@pytest.mark.parametrize("filename", HOSTILE_FILENAMES)
def test_hostile_filenames_are_refused_in_every_area(filename: str) -> None:
    for make in (lambda: BlobKey.upload(JOB, filename), lambda: BlobKey.result(JOB, 1, filename)):
        with pytest.raises(InvalidBlobKeyError) as info:
            make()
        # One error serves both callers: a 404 for URLs, a ValueError for code.
        assert isinstance(info.value, NotFoundError)
        assert isinstance(info.value, ValueError)
        assert info.value.status == 404
        assert info.value.code == "FILE_NOT_FOUND"


@pytest.mark.parametrize("job_id", HOSTILE_JOB_IDS)
def test_hostile_job_ids_are_refused_everywhere(store: LocalBlobStore, job_id: Any) -> None:
    with pytest.raises(InvalidBlobKeyError):
        BlobKey.result(job_id, 1, "out.png")
    with pytest.raises(InvalidBlobKeyError):
        BlobKey.upload(job_id, "in.png")
    for call in (store.delete_job, store.list_job, store.promoted_attempt):
        with pytest.raises(InvalidBlobKeyError):
            call(job_id)
    with pytest.raises(InvalidBlobKeyError):
        store.promote(job_id, 1)
    assert not store.root.exists()  # nothing touched the disk


@pytest.mark.parametrize(
    ("area", "attempt"),
    [
        ("results", 0),
        ("results", -1),
        ("results", True),
        ("results", 1.0),
        ("results", "1"),
        ("results", 1_000_000_000),
        ("uploads", 1),
        ("uploads", -1),
        ("uploads", False),
        ("logs", 1),
        ("", 1),
        ("../results", 1),
        ("Results", 1),
        ("results/..", 1),
    ],
)
def test_bad_area_or_attempt_is_refused(area: Any, attempt: Any) -> None:
    with pytest.raises(InvalidBlobKeyError):
        BlobKey(area, JOB, attempt, "out.png")


def test_all_hostile_names_refused_and_good_ones_accepted() -> None:
    refused = sum(not is_valid_filename(name) for name in HOSTILE_FILENAMES)
    assert refused == len(HOSTILE_FILENAMES)  # 100%
    for good in ("out.png", "a", "A-b_c.1.webp", "9" * 200, "result.tar.gz"):
        key = BlobKey.result(JOB, 3, good)
        assert key.relative_path == f"results/{JOB}/3/{good}"
    assert BlobKey.upload(JOB, "in.jpg").relative_path == f"uploads/{JOB}/in.jpg"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("photo.jpg", "photo.jpg"),
        ("My Photo (1).JPG", "My_Photo__1_.JPG"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\cat.png", "cat.png"),
        ("..", "file"),
        ("", "file"),
        ("a\x00b.png", "a_b.png"),
        ("x..png", "x.png"),
        ("\u00fc\u00f6.gif", "gif"),
    ],
)
def test_safe_filename_always_gives_an_accepted_name(raw: str, expected: str) -> None:
    assert safe_filename(raw) == expected
    assert is_valid_filename(safe_filename(raw))


def test_safe_filename_trims_overlong_names_keeping_the_extension() -> None:
    name = safe_filename("a" * 500 + ".png")
    assert len(name) == 200 and name.endswith(".png") and is_valid_filename(name)
    with pytest.raises(ValueError):
        safe_filename("..", fallback="../bad")


# -- writing and reading ---------------------------------------------------------------------


def test_put_bytes_and_stream_then_read_back(store: LocalBlobStore) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # more than one chunk
    key = BlobKey.result(JOB, 1, "out.bin")
    ref = store.put(key, io.BytesIO(data))
    assert ref.key == key
    assert ref.size == len(data)
    assert ref.sha256 == hashlib.sha256(data).hexdigest()
    with store.open(key) as handle:
        assert handle.read() == data
    assert store.size(key) == len(data)
    assert store.exists(key)
    assert store.path(key) == store.root / "results" / JOB / "1" / "out.bin"

    upload = BlobKey.upload(JOB, "in.jpg")
    ref = store.put(upload, b"jpeg bytes")
    assert (ref.size, ref.sha256) == (10, hashlib.sha256(b"jpeg bytes").hexdigest())
    assert (store.root / "uploads" / JOB / "in.jpg").read_bytes() == b"jpeg bytes"


def test_missing_blobs_are_file_not_found(store: LocalBlobStore) -> None:
    key = BlobKey.result(JOB, 1, "nope.png")
    for call in (store.open, store.path, store.size):
        with pytest.raises(NotFoundError) as info:
            call(key)
        assert info.value.code == "FILE_NOT_FOUND"
    assert not store.exists(key)
    assert store.delete(key) is False
    assert store.list_job(JOB) == []


def test_attempts_never_mix(store: LocalBlobStore) -> None:
    first = store.put(BlobKey.result(JOB, 1, "out.png"), b"attempt one")
    second = store.put(BlobKey.result(JOB, 2, "out.png"), b"attempt two")
    assert store.open(first.key).read() == b"attempt one"
    assert store.open(second.key).read() == b"attempt two"
    assert store.list_job(JOB) == [first.key, second.key]


class FailingSource:
    """A file-like source that hands out some bytes, then fails like a dropped upload."""

    def __init__(self, good_chunks: int) -> None:
        self.left = good_chunks

    def read(self, size: int = -1) -> bytes:
        if self.left == 0:
            raise ConnectionResetError("client went away")
        self.left -= 1
        return b"x" * 65536


def test_failed_write_leaves_previous_content_and_no_temp_file(store: LocalBlobStore) -> None:
    key = BlobKey.result(JOB, 1, "out.png")
    store.put(key, b"previous content")
    with pytest.raises(ConnectionResetError):
        store.put(key, FailingSource(good_chunks=5))
    assert store.open(key).read() == b"previous content"
    assert files_under(store.root) == [f"results/{JOB}/1/out.png"]


def test_failed_first_write_leaves_nothing(store: LocalBlobStore) -> None:
    key = BlobKey.upload(JOB, "in.png")
    with pytest.raises(ConnectionResetError):
        store.put(key, FailingSource(good_chunks=3))
    assert not store.exists(key)
    assert files_under(store.root) == []
    assert store.list_job(JOB) == []


def test_concurrent_writers_and_readers_see_whole_files(store: LocalBlobStore) -> None:
    key = BlobKey.result(JOB, 1, "out.bin")
    versions = [bytes([n]) * (1024 * 1024 + n * 4099) for n in range(1, 4)]
    digests = {hashlib.sha256(v).hexdigest() for v in versions}
    store.put(key, versions[0])
    stop = threading.Event()
    problems: list[str] = []
    reads = [0]

    def writer(offset: int) -> None:
        i = offset
        while not stop.is_set():
            store.put(key, io.BytesIO(versions[i % len(versions)]))
            i += 1

    def reader() -> None:
        while not stop.is_set():
            with store.open(key) as handle:
                data = handle.read()
            if hashlib.sha256(data).hexdigest() not in digests:
                problems.append(f"torn read of {len(data)} bytes")
            reads[0] += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)]
    threads += [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert problems == []
    assert reads[0] > 20  # the readers really raced the writers
    assert [p for p in files_under(store.root) if ".tmp-" in p] == []


# -- attempts and promotion ------------------------------------------------------------------


def test_promote_keeps_one_attempt_and_refuses_the_others(store: LocalBlobStore) -> None:
    store.put(BlobKey.result(JOB, 1, "a.png"), b"old attempt")
    store.put(BlobKey.result(JOB, 1, "b.png"), b"old attempt")
    winner = store.put(BlobKey.result(JOB, 2, "a.png"), b"new attempt")
    assert store.promoted_attempt(JOB) is None

    assert store.promote(JOB, 2) == 1
    assert store.promoted_attempt(JOB) == 2
    assert store.list_job(JOB) == [winner.key]

    # The earlier attempt finishing late adds nothing.
    with pytest.raises(StaleAttemptError) as info:
        store.put(BlobKey.result(JOB, 1, "c.png"), b"zombie output")
    assert info.value.status == 409
    assert store.list_job(JOB) == [winner.key]
    # The winning attempt may still write; promoting it again is harmless.
    store.put(BlobKey.result(JOB, 2, "extra.json"), b"{}")
    assert store.promote(JOB, 2) == 0
    with pytest.raises(StaleAttemptError):
        store.promote(JOB, 1)
    # Uploads are not attempts: unaffected.
    store.put(BlobKey.upload(JOB, "in.png"), b"input")
    assert len(store.list_job(JOB)) == 3


def test_zombie_attempt_racing_promotion_leaves_no_duplicate(store: LocalBlobStore) -> None:
    store.put(BlobKey.result(JOB, 2, "out.png"), b"final")
    stop = threading.Event()
    outcome: dict[str, int] = {"written": 0, "refused": 0}

    def zombie() -> None:
        n = 0
        while not stop.is_set():
            try:
                store.put(BlobKey.result(JOB, 1, f"out{n}.png"), b"late")
                outcome["written"] += 1
            except StaleAttemptError:
                outcome["refused"] += 1
                return
            n += 1

    thread = threading.Thread(target=zombie)
    thread.start()
    deadline = time.monotonic() + 10
    while outcome["written"] < 3 and time.monotonic() < deadline:
        time.sleep(0.001)
    store.promote(JOB, 2)
    thread.join(timeout=10)
    stop.set()
    thread.join(timeout=10)
    assert outcome["written"] > 0 and outcome["refused"] == 1
    assert store.list_job(JOB) == [BlobKey.result(JOB, 2, "out.png")]


# -- deleting --------------------------------------------------------------------------------


def test_delete_job_removes_every_area_and_attempt(store: LocalBlobStore) -> None:
    store.put(BlobKey.upload(JOB, "in.png"), b"in")
    store.put(BlobKey.result(JOB, 1, "out.png"), b"one")
    store.put(BlobKey.result(JOB, 2, "out.png"), b"two")
    store.promote(JOB, 2)
    kept = store.put(BlobKey.result(OTHER_JOB, 1, "out.png"), b"other")

    assert store.delete_job(JOB) is True
    assert store.list_job(JOB) == []
    assert store.promoted_attempt(JOB) is None
    assert not (store.root / "uploads" / JOB).exists()
    assert not (store.root / "results" / JOB).exists()
    assert store.delete_job(JOB) is False
    assert store.list_job(OTHER_JOB) == [kept.key]
    assert files_under(store.root) == [f"results/{OTHER_JOB}/1/out.png"]
    # A new job with the same id starts clean: no stale promotion.
    store.put(BlobKey.result(JOB, 1, "out.png"), b"fresh")


def test_delete_one_blob(store: LocalBlobStore) -> None:
    key = BlobKey.result(JOB, 1, "out.png")
    store.put(key, b"x")
    assert store.delete(key) is True
    assert not store.exists(key)
    assert store.delete(key) is False


# -- purge -----------------------------------------------------------------------------------


def test_purge_removes_only_expired_job_folders(store: LocalBlobStore) -> None:
    old, fresh, mixed = (uuid.uuid4().hex for _ in range(3))
    store.put(BlobKey.upload(old, "in.png"), b"in")
    store.put(BlobKey.result(old, 1, "out.png"), b"out")
    store.put(BlobKey.result(fresh, 1, "out.png"), b"out")
    store.put(BlobKey.result(mixed, 1, "old.png"), b"out")
    store.put(BlobKey.result(mixed, 2, "new.png"), b"out")
    # A crashed writer's temp file, old, inside the old job.
    (store.root / "results" / old / "1" / ".tmp-crashed").write_bytes(b"partial")
    for area in ("uploads", "results"):
        age_tree(store.root / area / old, 7200)
    age_tree(store.root / "results" / mixed, 7200)
    fresh_file = store.root / "results" / mixed / "2" / "new.png"
    os.utime(fresh_file)  # one recent file keeps its whole job

    assert store.purge_older_than(3600) == 2  # old's uploads and results folders
    assert store.list_job(old) == []
    assert not (store.root / "results" / old).exists()
    assert len(store.list_job(fresh)) == 1
    assert len(store.list_job(mixed)) == 2
    assert store.purge_older_than(3600) == 0
    assert store.purge_older_than(0) == 2  # everything is older than "now"
    assert files_under(store.root) == []


def test_purge_ignores_foreign_entries(store: LocalBlobStore) -> None:
    results = store.root / "results"
    results.mkdir(parents=True)
    (results / "README").write_text("not a job")
    (results / "not-a-job-id").mkdir()
    age_tree(results, 7200)
    assert store.purge_older_than(60) == 0
    assert (results / "README").exists()
    assert (results / "not-a-job-id").is_dir()


def test_concurrent_purges_remove_each_folder_once(store: LocalBlobStore) -> None:
    jobs = [uuid.uuid4().hex for _ in range(40)]
    for job in jobs:
        store.put(BlobKey.result(job, 1, "out.png"), b"x" * 100)
        store.put(BlobKey.upload(job, "in.png"), b"y")
    age_tree(store.root, 7200)
    counts: list[int] = []
    errors: list[BaseException] = []

    def purge() -> None:
        try:
            counts.append(store.purge_older_than(60))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=purge) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert sum(counts) == 80
    assert files_under(store.root) == []
    assert [p.name for p in (store.root / "results").iterdir()] == []


def test_purge_racing_writers_never_breaks_a_write(store: LocalBlobStore) -> None:
    stop = threading.Event()
    errors: list[BaseException] = []
    puts = [0]

    def writer() -> None:
        while not stop.is_set():
            try:
                store.put(BlobKey.result(JOB, 1, "out.png"), b"z" * 4096)
                puts[0] += 1
            except BaseException as exc:
                errors.append(exc)
                return

    def purger() -> None:
        while not stop.is_set():
            try:
                store.purge_older_than(0)  # everything is eligible: maximum contention
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=writer) for _ in range(2)]
    threads += [threading.Thread(target=purger) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert puts[0] > 10
    # Whatever survived is whole and only ever in its proper place.
    for path in files_under(store.root):
        assert path == f"results/{JOB}/1/out.png"
        assert (store.root / path).read_bytes() == b"z" * 4096


# -- symlinks --------------------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside the store with a file an escape would damage."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "victim.png").write_bytes(b"precious")
    (folder / "1").mkdir()
    (folder / "1" / "victim.png").write_bytes(b"precious")
    return folder


def assert_outside_intact(outside: Path) -> None:
    assert (outside / "victim.png").read_bytes() == b"precious"
    assert (outside / "1" / "victim.png").read_bytes() == b"precious"
    assert sorted(p.name for p in outside.iterdir()) == ["1", "victim.png"]


def test_symlinked_job_folder_is_never_followed(store: LocalBlobStore, outside: Path) -> None:
    results = store.root / "results"
    results.mkdir(parents=True)
    (results / JOB).symlink_to(outside)
    key = BlobKey.result(JOB, 1, "victim.png")

    for call in (store.open, store.path, store.size):
        with pytest.raises(NotFoundError):
            call(key)
    assert not store.exists(key)
    assert store.delete(key) is False
    assert store.list_job(JOB) == []
    assert store.promoted_attempt(JOB) is None
    with pytest.raises(BlobStoreError):
        store.put(key, b"overwrite")
    with pytest.raises(BlobStoreError):
        store.promote(JOB, 1)
    assert_outside_intact(outside)

    age_tree(outside, 7200)
    os.utime(results / JOB, (time.time() - 7200,) * 2, follow_symlinks=False)
    assert store.purge_older_than(60) == 1  # the link itself goes
    assert not os.path.lexists(results / JOB)
    assert_outside_intact(outside)


def test_delete_job_drops_a_symlinked_job_folder_only(store: LocalBlobStore, outside: Path) -> None:
    (store.root / "uploads").mkdir(parents=True)
    (store.root / "uploads" / JOB).symlink_to(outside)
    assert store.delete_job(JOB) is True
    assert not os.path.lexists(store.root / "uploads" / JOB)
    assert_outside_intact(outside)


def test_symlinks_inside_a_job_are_not_followed(store: LocalBlobStore, outside: Path) -> None:
    store.put(BlobKey.result(JOB, 1, "real.png"), b"real")
    job_dir = store.root / "results" / JOB
    (job_dir / "1" / "link.png").symlink_to(outside / "victim.png")
    (job_dir / "2").symlink_to(outside / "1")  # an attempt folder pointing outside
    link_key = BlobKey.result(JOB, 1, "link.png")

    with pytest.raises(NotFoundError):
        store.open(link_key)
    with pytest.raises(NotFoundError):
        store.path(link_key)
    with pytest.raises(NotFoundError):
        store.open(BlobKey.result(JOB, 2, "victim.png"))
    assert store.list_job(JOB) == [BlobKey.result(JOB, 1, "real.png")]
    assert store.delete(BlobKey.result(JOB, 2, "victim.png")) is False
    assert store.delete(link_key) is True  # removes the link, not its target
    assert_outside_intact(outside)

    (job_dir / "1" / "link.png").symlink_to(outside / "victim.png")
    assert store.promote(JOB, 1) == 1  # the attempt-2 link is removed, not followed
    assert not os.path.lexists(job_dir / "2")
    assert_outside_intact(outside)

    assert store.delete_job(JOB) is True
    assert_outside_intact(outside)


def test_purge_of_a_job_holding_links_keeps_their_targets(
    store: LocalBlobStore, outside: Path
) -> None:
    store.put(BlobKey.result(JOB, 1, "out.png"), b"out")
    job_dir = store.root / "results" / JOB
    (job_dir / "1" / "escape").symlink_to(outside)
    (job_dir / "escape-file").symlink_to(outside / "victim.png")
    age_tree(job_dir, 7200)
    age_tree(outside, 7200)
    assert store.purge_older_than(60) == 1
    assert not job_dir.exists()
    assert_outside_intact(outside)


def test_symlinked_area_folder_refuses_writes(store: LocalBlobStore, outside: Path) -> None:
    store.root.mkdir(parents=True)
    (store.root / "uploads").symlink_to(outside)
    with pytest.raises(BlobStoreError):
        store.put(BlobKey.upload(JOB, "in.png"), b"data")
    assert store.delete_job(JOB) is False
    age_tree(outside, 7200)
    assert store.purge_older_than(0) == 0
    assert_outside_intact(outside)
