"""``kill -9`` of a process while it writes enrolments to the SQLite gallery: every
acknowledged enrolment survives, and no enrolment is ever half stored.

A child process enrols batches of faces as fast as it can (one transaction per
batch, like ``POST /identities/{id}/faces``) and prints each identity id once
``add_faces`` has returned; it is killed at a moment no one chooses, usually in
the middle of a transaction. Needs no models: the embeddings are random.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from stream_server.gallery.sqlite import SQLiteGallery

REPO = Path(__file__).resolve().parents[2]
BATCH = 24

CHILD = textwrap.dedent(
    f"""
    import os, sys
    import numpy as np
    from stream_server.gallery.sqlite import SQLiteGallery
    from stream_server.gallery.store import NewFace

    store = SQLiteGallery(sys.argv[1])
    rng = np.random.default_rng(int(sys.argv[2]))
    crop = b"\\x89PNG\\r\\n\\x1a\\n" + os.urandom(30_000)  # about the size of a real crop
    print("ready", flush=True)
    while True:
        ident = store.create_identity("p")
        faces = [
            NewFace(rng.normal(size=512).astype(np.float32), "m:1", crop, 0.9, [0, 0, 1, 1])
            for _ in range({BATCH})
        ]
        store.add_faces(ident.id, faces)
        print("ack", ident.id, flush=True)
    """
)


def _run_and_kill(db: Path, seed: int, after_acks: int, extra_delay: float) -> list[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), str(seed)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    acked: list[str] = []
    try:
        assert proc.stdout.readline().strip() == "ready"
        while len(acked) < after_acks:
            line = proc.stdout.readline()
            assert line.startswith("ack "), line
            acked.append(line.split()[1])
        time.sleep(extra_delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        # Acknowledgements already printed before the kill count too.
        for line in proc.stdout.read().splitlines():
            if line.startswith("ack "):
                acked.append(line.split()[1])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return acked


def test_kill_9_mid_write_leaves_whole_enrolments(tmp_path):
    db = tmp_path / "gallery.sqlite3"
    acknowledged: list[str] = []
    for seed, delay in enumerate((0.0, 0.003, 0.011, 0.02, 0.037, 0.05)):
        acknowledged += _run_and_kill(db, seed, after_acks=2, extra_delay=delay)

        store = SQLiteGallery(db)
        try:
            idents, total = store.list_identities(0, 10_000)
            counts = {i.id: i.face_count for i in idents}
            for ident in acknowledged:
                assert counts[ident] == BATCH, (seed, ident)
            partial = {i: c for i, c in counts.items() if c not in (0, BATCH)}
            assert not partial, f"half-written enrolments after kill #{seed}: {partial}"
            # The identity being enrolled when the kill came may exist, empty: its own
            # transaction was acknowledged, the faces' was not. Nothing else is empty.
            assert sum(1 for c in counts.values() if c == 0) <= seed + 1
            assert store._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert sum(store.model_counts().values()) == BATCH * sum(
                1 for c in counts.values() if c == BATCH
            )
        finally:
            store.close()
    assert len(acknowledged) >= 12
