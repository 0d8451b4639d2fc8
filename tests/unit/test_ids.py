"""Request, message and trace ids: the shapes upstreams and clients expect, unique, and fresh in a fork."""

from __future__ import annotations

import os
import re
import uuid

from utils.ids import hex_id, uuid_text


def test_hex_id_is_32_hex_digits_and_unique() -> None:
    drawn = {hex_id() for _ in range(20_000)}
    assert len(drawn) == 20_000
    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in drawn)


def test_uuid_text_is_a_version_4_uuid_with_the_rfc_variant() -> None:
    drawn = [uuid_text() for _ in range(2_000)]
    assert len(set(drawn)) == len(drawn)
    for value in drawn:
        parsed = uuid.UUID(value)
        assert str(parsed) == value
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_a_forked_child_draws_other_ids_than_its_parent() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id, then leave at once
        os.write(write_end, hex_id().encode())
        os._exit(0)
    os.close(write_end)
    child_id = os.read(read_end, 64).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    assert re.fullmatch(r"[0-9a-f]{32}", child_id)
    assert child_id != hex_id()
