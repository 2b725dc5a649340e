"""The writer process's WAL checkpoints keep the WAL file from growing under continuous writes."""

from __future__ import annotations

import os
import sqlite3
import threading

from persistence.message_writer import _Checkpointer, _connect_sqlite

ROW_BYTES = 4000


def test_wal_restarts_under_continuous_writes(tmp_path):
    path = str(tmp_path / "wal.db")
    writer = _connect_sqlite(path)
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    # A small limit, so the file shrinks visibly once the WAL restarts.
    writer.execute("PRAGMA journal_size_limit = 65536")
    writer.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, body BLOB)")
    between_batches = threading.Lock()
    checkpointer = _Checkpointer(path, between_batches, interval=0.01)
    checkpointer.start()
    written = 0
    restarts = 0
    previous_size = 0
    try:
        while written < 64 * 1024 * 1024:
            # Like the writer process: one transaction after another, each under the lock.
            with between_batches:
                writer.execute("BEGIN IMMEDIATE")
                writer.executemany("INSERT INTO rows (body) VALUES (?)", [(os.urandom(ROW_BYTES),)] * 4)
                writer.execute("COMMIT")
            written += 4 * ROW_BYTES
            # After a restart the first commit cuts the file back to journal_size_limit.
            size = os.path.getsize(path + "-wal")
            restarts += size < previous_size
            previous_size = size
    finally:
        checkpointer.stop()
    writer.close()

    # Without restarts the WAL file only grows, because it keeps every transaction ever committed.
    assert restarts >= 2, f"the WAL restarted {restarts} times while {written} bytes of rows were written"


def test_checkpointer_copies_all_at_stop(tmp_path):
    path = str(tmp_path / "wal.db")
    writer = _connect_sqlite(path)
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("CREATE TABLE rows (id INTEGER PRIMARY KEY, body BLOB)")
    checkpointer = _Checkpointer(path, threading.Lock(), interval=60)
    checkpointer.start()
    writer.execute("BEGIN IMMEDIATE")
    writer.executemany("INSERT INTO rows (body) VALUES (?)", [(b"x" * 100,)] * 50)
    writer.execute("COMMIT")
    checkpointer.stop()

    reader = sqlite3.connect(path)
    _, frames, copied = reader.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    reader.close()
    writer.close()
    assert frames == copied
