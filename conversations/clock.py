"""The deadlines of one turn, shared by every upstream: idleness, the hold before streaming, pings."""

from __future__ import annotations

from messagers.events import AnswerEvent, ContentDelta, ReasoningDelta
from utils.errors import UpstreamTimeout, interrupted
from utils.settings import Settings

CLIENT_PING_SECONDS = 15.0


class TurnClock:
    """The deadlines of one turn: upstream idleness, the hold before streaming, pings to the upstream."""

    def __init__(self, settings: Settings, now: float) -> None:
        self.idle = settings.upstream_idle_timeout
        self.last_frame = self.last_upstream_ping = now
        self.hold_until: float | None = now + settings.stream_hold_timeout

    def idle_expired(self, now: float) -> bool:
        """The upstream has been silent for longer than UPSTREAM_IDLE_TIMEOUT."""
        return now - self.last_frame >= self.idle

    def hold_expired(self, now: float) -> bool:
        """True once, when the hold before streaming runs out with no answer text."""
        if self.hold_until is None or now < self.hold_until:
            return False
        self.hold_until = None
        return True

    def next_wait(self, now: float) -> float:
        """Seconds until something is due."""
        due = [
            self.last_frame + self.idle,
            max(self.last_frame, self.last_upstream_ping) + CLIENT_PING_SECONDS,
        ]
        if self.hold_until is not None:
            due.append(self.hold_until)
        return max(min(due) - now, 0.0)

    def upstream_ping_due(self, now: float) -> bool:
        """Time to ping a quiet upstream (and note that we did)."""
        if now - max(self.last_frame, self.last_upstream_ping) < CLIENT_PING_SECONDS:
            return False
        self.last_upstream_ping = now
        return True

    def saw(self, now: float, event: AnswerEvent | None = None) -> None:
        """A frame arrived (and `event` goes to the client); text or reasoning ends the hold."""
        self.last_frame = now
        if isinstance(event, (ContentDelta, ReasoningDelta)):
            self.hold_until = None


def raise_idle(emitted: int, settings: Settings, name: str = "Bing") -> None:
    """Give up on a silent upstream: 504 before any content, in-band interruption after."""
    error = UpstreamTimeout(f"{name} sent nothing for {settings.upstream_idle_timeout:g} s.")
    raise interrupted(error) if emitted else error
