import numpy as np

from stream_server.pipeline.select import CropSelector, FaceQuality, frontalness
from stream_server.types import Box, Detection


def face(size=100.0, yaw_shift=0.0):
    x = y = 50.0
    kps = np.array(
        [
            [x + 0.3 * size, y + 0.4 * size],
            [x + 0.7 * size, y + 0.4 * size],
            [x + (0.5 + yaw_shift) * size, y + 0.6 * size],
            [x + 0.5 * size, y + 0.8 * size],
            [x + 0.02 * size, y + 0.5 * size],
            [x + 0.98 * size, y + 0.5 * size],
        ],
        dtype=np.float32,
    )
    return Detection(Box(x, y, size, size), 0.9, kps)


def q(overall: float, size=112.0) -> FaceQuality:
    # A profile (frontal 0) of full size and sharpness: overall = 0.25 * sqrt(score).
    quality = FaceQuality(size_px=size, score=(4 * overall) ** 2, frontal=0.0, sharpness=60.0)
    assert abs(quality.overall - overall) < 1e-9
    return quality


def test_frontal_faces_score_higher_than_turned_ones():
    assert frontalness(face().keypoints) > 0.9
    assert frontalness(face(yaw_shift=0.12).keypoints) < 0.6
    assert frontalness(face(yaw_shift=0.3).keypoints) == 0.0


def test_frontalness_ignores_head_roll():
    kps = face().keypoints
    centre = kps.mean(axis=0)
    a = np.deg2rad(30)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], np.float32)
    rolled = (kps - centre) @ rot.T + centre
    assert abs(frontalness(rolled) - frontalness(kps)) < 0.05


def test_small_faces_are_never_due():
    sel = CropSelector(min_face_px=40)
    assert not sel.due(1, face(size=30), 0.0, None)
    assert sel.due(1, face(size=60), 0.0, None)


def test_one_embedding_in_flight_per_track_and_interval_while_undecided():
    sel = CropSelector(interval_s=0.15)
    d = face()
    assert sel.due(1, d, 0.0, None)
    sel.submitted(1, 0.0, 100)
    assert not sel.due(1, d, 1.0, None)  # still in flight
    sel.finished(1)
    assert not sel.due(1, d, 0.1, None)
    assert sel.due(1, d, 0.16, None)
    assert sel.due(2, d, 0.1, None)  # another track has its own budget


def test_named_tracks_are_rechecked_rarely_unless_the_face_grew_or_doubt_arose():
    sel = CropSelector(interval_s=0.15, reverify_s=3.0, growth_ratio=1.5)
    sel.submitted(1, 0.0, 100)
    sel.finished(1)
    assert not sel.due(1, face(size=100), 1.0, "matched")
    assert sel.due(1, face(size=160), 1.0, "matched")  # came closer: a better look
    assert sel.due(1, face(size=100), 3.1, "matched")
    sel.recheck(1, 1.0)
    assert sel.due(1, face(size=100), 1.0, "matched")


def test_unknown_tracks_are_retried_at_their_own_rate():
    sel = CropSelector(unknown_retry_s=1.0, reverify_s=3.0)
    sel.submitted(1, 0.0, 100)
    sel.finished(1)
    assert not sel.due(1, face(), 0.9, "unknown")
    assert sel.due(1, face(), 1.1, "unknown")


def test_good_crops_go_at_once_poor_ones_only_the_best_after_a_wait():
    sel = CropSelector(min_quality=0.35, starve_s=0.5, floor_quality=0.08)
    assert sel.accept(1, q(1.0), 0.0)
    poor = [q(0.1), q(0.3), q(0.2)]
    assert all(p.overall < 0.35 for p in poor)
    assert not sel.accept(7, poor[1], 0.0)
    got = [sel.hold(7, p, f"crop{i}", i * 0.25) for i, p in enumerate(poor)]
    assert got == [None, None, "crop1"]  # the best of the window, once it has waited
    sel.submitted(7, 0.5, 100)
    sel.finished(7)
    assert sel.hold(7, q(0.3), "next", 0.6) is None  # a new window starts


def test_crops_below_the_floor_are_never_used():
    sel = CropSelector(starve_s=0.5, floor_quality=0.5)
    assert sel.hold(3, q(0.05), "bad", 0.0) is None
    assert sel.hold(3, q(0.05), "bad", 5.0) is None
