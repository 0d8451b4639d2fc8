"""Server-side state the emulator keeps: conversations and connection records."""

from __future__ import annotations

import base64
import os
import secrets
import time
from dataclasses import dataclass, field


@dataclass
class Conversation:
    """One conversation created through /turing/conversation/create."""

    conversation_id: str
    client_id: str
    encrypted_signature: str
    signature: str
    signed_in: bool
    created_at: float = field(default_factory=time.time)
    turns: int = 0
    disengaged: bool = False
    flags: frozenset[str] = frozenset()  # the account's `emulate=` cookie flags at create


@dataclass
class ConnectionRecord:
    """What happened on one ChatHub websocket, for tests to inspect."""

    opened_at: float = field(default_factory=time.time)
    closed_at: float | None = None
    completed: bool = False
    closed_early_by_client: bool = False
    answer_text: str = ""
    sent_text: str = ""
    fault: str | None = None
    handshake_done: bool = False
    chats: int = 0
    token: str | None = None
    flags: frozenset[str] = frozenset()  # `emulate=` cookie flags on the websocket upgrade


def new_conversation(signed_in: bool, flags: frozenset[str] = frozenset()) -> Conversation:
    """Create a conversation with fresh Bing-shaped ids and signatures."""
    realm = "BingProd" if signed_in else "BingProdUnAuthenticatedUsers"
    return Conversation(
        conversation_id=f"51D|{realm}|{secrets.token_hex(32).upper()}",
        client_id=str(secrets.randbelow(9 * 10**18) + 10**18),
        encrypted_signature=_token_with_specials(),
        signature=_token_with_specials(),
        signed_in=signed_in,
        flags=flags,
    )


def _token_with_specials() -> str:
    """Return a base64 token that contains '+', '/' and '=' (to exercise URL-encoding)."""
    while True:
        token = base64.b64encode(os.urandom(173)).decode()
        if "+" in token and "/" in token and token.endswith("="):
            return token
