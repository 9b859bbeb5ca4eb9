"""Roles on scripted calls: by channel (certain), or learned from who asks the questions (diarized)."""

from __future__ import annotations

import pytest

from presales_ws.speakers import Attribution, SpeakerTracker, parse_channel_roles


def test_two_channel_roles_come_from_the_channel_with_certainty() -> None:
    tracker = SpeakerTracker(channels=2)
    assert tracker.attribute(0, None) == Attribution("consultant", 1.0)
    assert tracker.attribute(1, 3) == Attribution("customer", 1.0)
    assert tracker.observe_final(1, None, "What does it cost?") is False
    assert tracker.roles == {}


def test_two_channel_roles_can_be_swapped() -> None:
    tracker = SpeakerTracker(channels=2, channel_roles=("customer", "consultant"))
    assert tracker.attribute(0, None).role == "customer"
    assert tracker.attribute(1, None).role == "consultant"


def test_one_channel_without_speaker_ids_is_unknown() -> None:
    tracker = SpeakerTracker(channels=1)
    assert tracker.observe_final(0, None, "Does it support SSO?") is False
    assert tracker.attribute(0, None) == Attribution("unknown", 0.0)


def test_speaker_who_asks_more_questions_becomes_customer() -> None:
    tracker = SpeakerTracker(channels=1, threshold=0.6)
    assert tracker.observe_final(0, 0, "Does your platform support SSO with Okta?") is False
    assert tracker.attribute(0, 0).role == "unknown"  # one question is not enough evidence
    assert tracker.observe_final(0, 1, "Yes, we have a native Okta integration.") is False
    assert tracker.observe_final(0, 0, "How long does onboarding take?") is True
    assert tracker.roles == {"0": "customer", "1": "consultant"}
    customer = tracker.attribute(0, 0)
    assert customer.role == "customer" and customer.confidence == pytest.approx(0.75)
    assert tracker.attribute(0, 1).role == "consultant"


def test_confidence_grows_with_evidence() -> None:
    tracker = SpeakerTracker(channels=1)
    tracker.observe_final(0, 1, "Let me show you the dashboard.")
    confidences = []
    for question in ["What about pricing?", "Is there an API?", "Can we host it in the EU?"]:
        tracker.observe_final(0, 0, question)
        confidences.append(tracker.attribute(0, 0).confidence)
    assert confidences == sorted(confidences) and confidences[0] < confidences[-1]
    assert confidences[-1] == pytest.approx(0.875)


def test_unseen_speaker_is_unknown_even_when_others_are_known() -> None:
    tracker = SpeakerTracker(channels=1)
    for text in ["What is the price?", "Is SSO included?"]:
        tracker.observe_final(0, 0, text)
    assert tracker.attribute(0, 7) == Attribution("unknown", 0.0)


def test_roles_swap_when_the_evidence_shifts_and_the_change_is_reported() -> None:
    tracker = SpeakerTracker(channels=1)
    tracker.observe_final(0, 0, "What is the price?")
    assert tracker.observe_final(0, 0, "Is SSO included?") is True
    assert tracker.roles == {"0": "customer"}
    changes = [
        tracker.observe_final(0, 1, q)
        for q in ["Do you have a trial?", "Can we pay yearly?", "What about support?", "Where is data stored?"]
    ]
    assert tracker.roles == {"0": "consultant", "1": "customer"}
    assert changes.count(True) == 2  # lost the lead (unknown), then took it


@pytest.mark.parametrize(
    ("value", "expected"),
    [("consultant,customer", ("consultant", "customer")), (" Customer , consultant ", ("customer", "consultant"))],
)
def test_parse_channel_roles(value: str, expected: tuple[str, str]) -> None:
    assert parse_channel_roles(value) == expected


@pytest.mark.parametrize("value", ["customer", "customer,customer", "boss,customer", "a,b,c", ""])
def test_parse_channel_roles_rejects_anything_else(value: str) -> None:
    with pytest.raises(ValueError, match="consultant,customer"):
        parse_channel_roles(value)
