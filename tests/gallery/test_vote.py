from stream_server.gallery.vote import TrackVote
from stream_server.types import Candidate, Match

A = ("a", "Alice")
B = ("b", "Bruno")


def m(best, sim, runner=None, rsim=0.0):
    best_c = Candidate(best[0], best[1], sim) if best else None
    run_c = Candidate(runner[0], runner[1], rsim) if runner else None
    return Match(best_c, run_c)


def test_named_only_after_enough_agreeing_embeddings():
    v = TrackVote(threshold=0.3, margin=0.05, min_agree=2)
    assert v.add(m(A, 0.5, B, 0.1)) is None
    d = v.add(m(A, 0.45, B, 0.1))
    assert d and d.kind == "matched" and d.candidate.identity_id == "a" and d.votes == 2
    assert d.candidate.similarity == 0.5  # reports its best evidence


def test_the_same_decision_is_reported_once():
    v = TrackVote(min_agree=2)
    v.add(m(A, 0.5))
    assert v.add(m(A, 0.5)) is not None
    for _ in range(10):
        assert v.add(m(A, 0.6)) is None


def test_below_threshold_or_without_margin_never_names():
    v = TrackVote(threshold=0.3, margin=0.05, min_agree=2, max_attempts=100)
    for _ in range(5):
        assert v.add(m(A, 0.29)) is None
        assert v.add(m(A, 0.6, B, 0.58)) is None
    assert v.identity is None


def test_unknown_after_bounded_attempts_then_named_if_evidence_comes():
    # Close to someone but never enough: unknown after max_attempts.
    v = TrackVote(threshold=0.3, min_agree=2, max_attempts=4)
    decisions = [v.add(m(A, 0.25)) for _ in range(4)]
    assert decisions[:3] == [None, None, None]
    assert decisions[3].kind == "unknown" and decisions[3].attempts == 4
    assert decisions[3].candidate.identity_id == "a"  # its best guess, for the record
    assert v.add(m(A, 0.25)) is None  # unknown is reported once
    v.add(m(B, 0.6))
    d = v.add(m(B, 0.6))
    assert d.kind == "matched" and d.candidate.identity_id == "b"


def test_a_face_like_nobody_is_declared_unknown_sooner():
    v = TrackVote(threshold=0.3, max_attempts=8, far_unknown=3, far_ratio=0.6)
    assert v.add(m(A, 0.1)) is None
    assert v.add(m(A, 0.2)) is None  # resembles someone: the streak starts over
    assert v.add(m(A, 0.1)) is None
    assert v.add(m(None, 0.0)) is None
    d = v.add(m(B, 0.17))
    assert d.kind == "unknown" and d.attempts == 5


def test_conflicting_evidence_needs_a_majority():
    v = TrackVote(min_agree=2, max_attempts=100, window=4)
    assert v.add(m(A, 0.5)) is None
    assert v.add(m(B, 0.5)) is None  # one each: nobody yet
    d = v.add(m(A, 0.5))
    assert d.candidate.identity_id == "a"
    assert v.add(m(B, 0.5)) is None  # 2-2 in the window: no switch on a tie
    assert v.identity.identity_id == "a"


def test_a_name_is_withdrawn_when_the_face_clearly_is_someone_else():
    v = TrackVote(threshold=0.3, min_agree=2)
    v.add(m(A, 0.5))
    v.add(m(A, 0.5))
    assert v.identity.identity_id == "a"
    v.add(m(B, 0.2), current_similarity=0.05)
    assert v.identity is not None and v.doubtful  # one bad look is not enough
    v.add(m(B, 0.2), current_similarity=0.04)
    assert v.identity is None and v.withdrawn == 1
    v.add(m(B, 0.5))
    d = v.add(m(B, 0.5))
    assert d.kind == "matched" and d.candidate.identity_id == "b"


def test_one_good_look_clears_a_doubt():
    v = TrackVote(threshold=0.3, min_agree=2)
    v.add(m(A, 0.5))
    v.add(m(A, 0.5))
    v.add(m(None, 0.0), current_similarity=0.02)
    v.add(m(A, 0.5), current_similarity=0.5)
    v.add(m(None, 0.0), current_similarity=0.02)
    assert v.identity.identity_id == "a"
