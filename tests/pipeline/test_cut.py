import numpy as np

from stream_server.pipeline.cut import SceneCutDetector


def test_the_clip_has_exactly_its_three_hard_cuts(media_dir):
    from stream_server.ingest.video import iter_video_frames

    det = SceneCutDetector()
    cuts = [
        i
        for i, (img, _pts, _tb) in enumerate(
            iter_video_frames(str(media_dir / "short_hamilton_clip.mp4"))
        )
        if det.update(img)
    ]
    # Piano -> stage, stage -> close-up, close-up -> audience (seen frame by frame).
    assert cuts == [20, 82, 211]


def test_motion_and_lighting_changes_within_a_shot_are_not_cuts():
    import cv2

    rng = np.random.default_rng(0)
    # A picture with structure at several scales, like a real scene.
    scene = cv2.resize(rng.integers(0, 255, (18, 32, 3), dtype=np.uint8), (640, 360))
    det = SceneCutDetector()
    assert not det.update(scene)
    for shift in range(1, 30):
        moved = np.roll(scene, shift * 3, axis=1)  # a pan
        assert not det.update(moved)
    darker = (np.roll(scene, 90, axis=1) * 0.85).astype(np.uint8)  # lights dim a bit
    assert not det.update(darker)
    other = cv2.resize(rng.integers(0, 60, (18, 32, 3), dtype=np.uint8), (640, 360))  # new shot
    assert det.update(other)
