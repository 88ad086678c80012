"""Per-track voting: name a face only when its evidence agrees over time."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from ..types import Candidate, Match


@dataclass(frozen=True)
class Decision:
    kind: Literal["matched", "unknown"]
    candidate: Candidate | None  # the identity for "matched"; best guess for "unknown"
    votes: int
    attempts: int


@dataclass
class TrackVote:
    """Accumulates a track's matches and decides who it is.

    An embedding *agrees* with identity X when X is its best match at or above
    ``threshold`` and ahead of the runner-up by at least ``margin``. The track is
    named X when ``min_agree`` of its last ``window`` embeddings agree with X and
    no other identity has as many; it is declared unknown after ``max_attempts``
    embeddings without a name, or sooner, after ``far_unknown`` embeddings in a row
    that resemble nobody (under ``far_ratio`` of the threshold). Each decision is reported once:
    a later decision is reported only when it names someone else (or names someone
    after unknown).
    """

    threshold: float = 0.30
    margin: float = 0.05
    min_agree: int = 2
    max_attempts: int = 8
    window: int = 6
    far_unknown: int = 3
    far_ratio: float = 0.6
    attempts: int = 0
    far_streak: int = 0
    doubts: int = 0
    withdrawn: int = 0
    decision: Decision | None = None
    best_seen: Candidate | None = None
    _recent: deque = field(default_factory=lambda: deque(maxlen=6))

    def __post_init__(self) -> None:
        self._recent = deque(maxlen=max(self.window, self.min_agree))

    @property
    def settled(self) -> bool:
        return self.decision is not None

    @property
    def identity(self) -> Candidate | None:
        if self.decision is not None and self.decision.kind == "matched":
            return self.decision.candidate
        return None

    def resembles_someone(self, match: Match) -> bool:
        """Is this embedding anywhere near an enrolled person (``far_ratio`` of the
        threshold)? Faces that resemble nobody are decided and re-checked sooner and
        less often respectively."""
        return match.best is not None and match.best.similarity >= self.threshold * self.far_ratio

    def agrees(self, match: Match) -> bool:
        return match.named(self.threshold, self.margin) is not None

    @property
    def doubtful(self) -> bool:
        return self.doubts > 0

    def add(self, match: Match, current_similarity: float | None = None) -> Decision | None:
        """Record one embedding's match; returns a new decision, if this made one.

        ``current_similarity`` is this embedding's similarity to the identity the
        track is named after. Two embeddings in a row far below the threshold (under
        half of it: a different face, after a scene cut or a mix-up of the tracker)
        withdraw the name, and the track is voted on afresh.
        """
        named = self.identity
        if named is not None and current_similarity is not None:
            if current_similarity < self.threshold * 0.5 and not (
                match.best is not None and match.best.identity_id == named.identity_id
            ):
                self.doubts += 1
                if self.doubts >= 2:
                    self.decision = None
                    self._recent.clear()
                    self.attempts = 0
                    self.doubts = 0
                    self.withdrawn += 1
                    self.best_seen = None
                    return None
            else:
                self.doubts = 0
        self.attempts += 1
        self.far_streak = 0 if self.resembles_someone(match) else self.far_streak + 1
        if match.best is not None and (
            self.best_seen is None or match.best.similarity > self.best_seen.similarity
        ):
            self.best_seen = match.best
        self._recent.append(match.best if self.agrees(match) else None)
        tally: dict[str, list[Candidate]] = {}
        for cand in self._recent:
            if cand is not None:
                tally.setdefault(cand.identity_id, []).append(cand)
        if tally:
            ranked = sorted(tally.values(), key=len, reverse=True)
            top = ranked[0]
            clear = len(ranked) == 1 or len(ranked[1]) < len(top)
            if len(top) >= self.min_agree and clear:
                best = max(top, key=lambda c: c.similarity)
                current = self.identity
                if current is None or current.identity_id != best.identity_id:
                    self.decision = Decision("matched", best, len(top), self.attempts)
                    return self.decision
                return None
        if self.decision is None and (
            self.attempts >= self.max_attempts or self.far_streak >= self.far_unknown
        ):
            self.decision = Decision("unknown", self.best_seen, 0, self.attempts)
            return self.decision
        return None
