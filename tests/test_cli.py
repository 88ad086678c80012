"""The command line as a user runs it: enroll, models, replay with events and annotation."""

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_cli(args, env, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", "stream_server.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_enroll_then_replay_writes_events_and_an_annotated_video(model_dir, media_dir, tmp_path):
    env = dict(
        os.environ,
        FACE_MODEL_DIR=str(model_dir),
        FACE_DATA_DIR=str(tmp_path / "data"),
        FACE_ALLOW_DOWNLOAD="false",
        PYTHONPATH=str(REPO),
    )
    r = run_cli(["models"], env)
    assert r.returncode == 0 and "w600k_mbf.onnx" in r.stdout, r.stderr
    r = run_cli(["enroll", "Lin-Manuel Miranda", str(media_dir / "lin-manuel-miranda.png")], env)
    assert r.returncode == 0 and "enrolled 'Lin-Manuel Miranda': 1 face" in r.stdout, r.stderr
    r = run_cli(["enroll", "--dir", str(media_dir / "people"), "--title-case"], env)
    assert r.returncode == 0 and "enrolled 'Kit Harington': 2 face(s)" in r.stdout, r.stderr
    events, video = tmp_path / "ev.jsonl", tmp_path / "out.mp4"
    r = run_cli(
        [
            "replay",
            str(media_dir / "short_hamilton_clip.mp4"),
            "--detector",
            "short",
            "--events",
            str(events),
            "--annotate",
            str(video),
        ],
        env,
    )
    assert r.returncode == 0, r.stderr
    assert "face.matched" in r.stdout and "Lin-Manuel Miranda" in r.stdout
    summary = json.loads(r.stdout[r.stdout.index("{\n") :])
    assert summary["frames"] == 275 and summary["events"]["face.matched"] >= 1
    lines = [json.loads(x) for x in events.read_text().splitlines()]
    assert {e["type"] for e in lines} >= {"track.started", "face.matched", "track.ended"}
    import av

    with av.open(str(video)) as c:
        assert sum(1 for _ in c.decode(video=0)) == 275


def test_missing_models_offline_exit_with_a_clear_message(tmp_path):
    env = dict(
        os.environ,
        FACE_MODEL_DIR=str(tmp_path / "none"),
        FACE_DATA_DIR=str(tmp_path),
        FACE_ALLOW_DOWNLOAD="false",
        PYTHONPATH=str(REPO),
    )
    r = run_cli(["models"], env)
    assert r.returncode == 1 and "MISSING" in r.stdout and "face_detection_short_range" in r.stdout
    r = run_cli(["replay", "/nonexistent.mp4"], env)
    assert r.returncode == 2 and "no such file" in r.stderr


def test_enroll_refuses_an_image_without_a_face(model_dir, media_dir, tmp_path):
    import numpy as np
    from PIL import Image

    blank = tmp_path / "wall.png"
    Image.fromarray(np.full((200, 200, 3), 128, np.uint8)).save(blank)
    env = dict(
        os.environ,
        FACE_MODEL_DIR=str(model_dir),
        FACE_DATA_DIR=str(tmp_path / "d"),
        FACE_ALLOW_DOWNLOAD="false",
        PYTHONPATH=str(REPO),
    )
    r = run_cli(["enroll", "Nobody", str(media_dir / "obama.jpg"), str(blank)], env)
    assert r.returncode == 1 and "no face found" in r.stderr
    r = run_cli(["gallery", "list"], env)
    assert "0 identities" in r.stdout  # all-or-nothing: the good photo was not stored either
