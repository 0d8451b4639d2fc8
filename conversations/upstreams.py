"""The upstream interface: what the shared turn loop (`conversations/turn.py`) needs from a protocol.

Everything above it is shared by every upstream: the API layer, the translation of answer events
into OpenAI chunks, the error mapping, continuation (the conversation store), the account pool and
failover, the warm pools and the limits. An implementation only starts conversations and runs turns:

- `BingClient` (`conversations/bing.py`): Bing's ChatHub create + SignalR websocket;
- `CopilotClient` (`conversations/copilot.py`): copilot.microsoft.com's start + JSON websocket.

A model names its upstream (`ModelSpec.upstream`), and so does every account (`Account.upstream`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Protocol

from conversations.bing import BingClient
from conversations.copilot import CopilotClient
from conversations.models import BING, COPILOT, ModelSpec

if TYPE_CHECKING:
    from conversations.accounts import Account
    from conversations.threads import ChatThread, Session
    from conversations.turn import TurnPlan, Upstream
    from messagers.events import AnswerEvent
    from utils.settings import Settings


class UpstreamClient(Protocol):
    """One upstream protocol: start or continue a conversation, send a turn, yield answer events.

    `send_turn` yields `ContentDelta`, `ReasoningDelta`, `ImageGenerated`, `Waiting` and finally one
    `Finished` (with citations, suggested follow-ups and images); a failure is raised as an
    `UpstreamError` (a `StreamInterrupted` once something was yielded), never yielded silently.
    """

    name: str  # "bing" | "copilot": the `upstream` of the models and accounts it serves

    def check_fresh(self, plan: TurnPlan, settings: Settings) -> None:
        """Refuse (400 `context_length_exceeded`) what a fresh conversation would carry over budget."""
        ...

    async def start_conversation(self, upstream: Upstream, account: Account) -> Session:
        """A new conversation on `account`; raises UpstreamError."""
        ...

    async def prepare(self, upstream: Upstream, account: Account, session: Session) -> None:
        """Make a pooled conversation ready beyond its start (Bing: open its socket ahead); never raises."""
        ...

    def turn_limit(self, session: Session) -> int | None:
        """The conversation's turn limit when its start said it."""
        ...

    def send_turn(
        self, plan: TurnPlan, upstream: Upstream, thread: ChatThread, account: Account | None
    ) -> AsyncGenerator[AnswerEvent, None]:
        """Turn `thread.turns` of the conversation (0 = fresh, carrying the context)."""
        ...


CLIENTS: dict[str, UpstreamClient] = {BING: BingClient(), COPILOT: CopilotClient()}


def client_named(name: str) -> UpstreamClient:
    """The implementation of the upstream called `name` ("bing" or "copilot")."""
    return CLIENTS[name]


def client_for(model: ModelSpec) -> UpstreamClient:
    """The implementation that serves `model`."""
    return CLIENTS[model.upstream]
