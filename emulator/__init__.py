"""Bing Chat emulator: conversation create + Sydney ChatHub over real loopback sockets."""

from .faults import CHAT_FAULTS, CREATE_FAULTS, Faults
from .server import BingEmulator
from .state import ConnectionRecord, Conversation
from .thread import EmulatorThread

__all__ = [
    "CHAT_FAULTS",
    "CREATE_FAULTS",
    "BingEmulator",
    "ConnectionRecord",
    "Conversation",
    "EmulatorThread",
    "Faults",
]
