import numpy as np

from stream_server.pipeline.track import FaceTracker
from stream_server.types import Box, Detection


def det(x, y, size=80.0, score=0.9):
    kps = np.array(
        [
            [x + 0.3 * size, y + 0.4 * size],
            [x + 0.7 * size, y + 0.4 * size],
            [x + 0.5 * size, y + 0.6 * size],
            [x + 0.5 * size, y + 0.8 * size],
            [x + 0.05 * size, y + 0.5 * size],
            [x + 0.95 * size, y + 0.5 * size],
        ],
        dtype=np.float32,
    )
    return Detection(Box(x, y, size, size), score, kps)


def test_a_moving_face_keeps_one_id():
    tr = FaceTracker()
    ids = set()
    started = []
    for i in range(60):
        up = tr.update([det(100 + 4 * i, 50 + i)], i / 30)
        started += up.started
        ids.update(s.track_id for s in up.active)
        assert not up.ended
    assert len(ids) == 1
    assert len(started) == 1  # confirmed once, on its second frame


def test_two_faces_crossing_paths_keep_their_ids():
    tr = FaceTracker()
    first_ids = None
    for i in range(40):
        a, b = det(50 + 8 * i, 100), det(370 - 8 * i, 260)
        up = tr.update([a, b], i / 30)
        by_y = {round(s.detection.box.y): s.track_id for s in up.active}
        if i >= 1:
            if first_ids is None:
                first_ids = by_y
            assert by_y == first_ids


def test_a_face_missing_for_a_few_frames_keeps_its_id_and_is_marked_resumed():
    tr = FaceTracker(max_missing_s=1.0)
    for i in range(10):
        up = tr.update([det(200, 100)], i / 30)
    (tid,) = [s.track_id for s in up.active]
    for i in range(10, 20):  # turned away: no detection for 1/3 s
        up = tr.update([], i / 30)
        assert not up.ended
    up = tr.update([det(204, 102)], 20 / 30)
    assert [s.track_id for s in up.active] == [tid]
    assert up.active[0].resumed


def test_a_face_gone_longer_than_the_limit_ends_and_a_new_one_gets_a_new_id():
    tr = FaceTracker(max_missing_s=0.5)
    for i in range(5):
        up = tr.update([det(200, 100)], i / 30)
    (tid,) = [s.track_id for s in up.active]
    ended = []
    for i in range(5, 30):
        ended += tr.update([], i / 30).ended
    assert ended == [tid]
    tr.update([det(200, 100)], 1.0)
    up = tr.update([det(200, 100)], 1.0 + 1 / 30)
    assert [s.track_id for s in up.active] != [tid]


def test_a_different_face_far_away_is_not_given_the_old_id():
    tr = FaceTracker()
    for i in range(5):
        up = tr.update([det(100, 100, 90)], i / 30)
    (tid,) = [s.track_id for s in up.active]
    for i in range(5, 8):
        tr.update([], i / 30)
    # A smaller face about one face-width away appears while the old track lingers.
    tr.update([det(180, 40, 55)], 8 / 30)
    up = tr.update([det(180, 40, 55)], 9 / 30)
    assert up.active and all(s.track_id != tid for s in up.active)


def test_a_single_frame_false_positive_never_starts_a_track():
    tr = FaceTracker()
    up = tr.update([det(10, 10)], 0.0)
    assert up.started == [] and up.active == []
    ended = []
    for i in range(1, 60):
        ended += tr.update([], i / 30).ended
    assert ended == []
