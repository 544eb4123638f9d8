"""What the notification stream resumes after, read from a Last-Event-ID header."""

from __future__ import annotations

import pytest

from notification_service.stream import InvalidLastEventIdError, resume_after


def test_resume_after_reads_a_sent_id_or_none() -> None:
    assert resume_after(None) is None
    assert resume_after("0") == 0
    assert resume_after(" 42 ") == 42
    assert resume_after("9223372036854775807") == 2**63 - 1


@pytest.mark.parametrize(
    "header", ["", "abc", "-1", "+1", "1.5", "1e3", "0x10", "١٢", "9223372036854775808", "1" * 400]
)
def test_resume_after_refuses_anything_else(header: str) -> None:
    with pytest.raises(InvalidLastEventIdError, match="Last-Event-ID"):
        resume_after(header)
