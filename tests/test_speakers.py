"""Roles on scripted calls: by channel (certain), or learned from who asks the questions (diarized)."""

from __future__ import annotations

import pytest

from presales_ws.speakers import Attribution, SpeakerTracker, parse_channel_roles

CUSTOMER, CONSULTANT = 0, 1  # diarized speaker ids in the scripted calls


def test_two_channel_roles_come_from_the_channel_with_certainty() -> None:
    tracker = SpeakerTracker(channels=2)
    assert tracker.attribute(0, None) == Attribution("consultant", 1.0)
    assert tracker.attribute(1, 3) == Attribution("customer", 1.0)
    for text in ["What does it cost?", "Is there an API?", "Can we host it in the EU?"]:
        assert tracker.observe_final(0, 5, text) is False
    assert tracker.attribute(0, 5) == Attribution("consultant", 1.0)
    assert tracker.roles == {}


def test_two_channel_roles_can_be_swapped() -> None:
    tracker = SpeakerTracker(channels=2, channel_roles=("customer", "consultant"))
    assert tracker.attribute(0, None) == Attribution("customer", 1.0)
    assert tracker.attribute(1, None) == Attribution("consultant", 1.0)


def test_one_channel_without_speaker_ids_is_unknown() -> None:
    tracker = SpeakerTracker(channels=1)
    for text in ["Does it support SSO?", "How much is it?", "Is there a trial?"]:
        assert tracker.observe_final(0, None, text) is False
    assert tracker.attribute(0, None) == Attribution("unknown", 0.0)
    assert tracker.roles == {}


def test_speaker_who_asks_more_questions_becomes_customer() -> None:
    tracker = SpeakerTracker(channels=1, threshold=0.6)
    assert tracker.observe_final(0, CUSTOMER, "Does your platform support SSO with Okta?") is False
    assert tracker.attribute(0, CUSTOMER) == Attribution("unknown", 0.5)  # one question is not enough evidence
    assert tracker.observe_final(0, CONSULTANT, "Yes, we have a native Okta integration.") is False
    assert tracker.roles == {"0": "unknown", "1": "unknown"}
    assert tracker.attribute(0, CONSULTANT) == Attribution("unknown", 0.5)
    assert tracker.observe_final(0, CUSTOMER, "How long does onboarding take") is True
    assert tracker.roles == {"0": "customer", "1": "consultant"}
    assert tracker.attribute(0, CUSTOMER) == Attribution("customer", 0.75)
    assert tracker.attribute(0, CONSULTANT) == Attribution("consultant", 0.75)


def test_a_lower_threshold_labels_on_the_first_question() -> None:
    tracker = SpeakerTracker(channels=1, threshold=0.5)
    tracker.observe_final(0, CONSULTANT, "Thanks for joining today.")
    assert tracker.observe_final(0, CUSTOMER, "What does it cost") is True
    assert tracker.roles == {"0": "customer", "1": "consultant"}


def test_confidence_grows_with_evidence() -> None:
    tracker = SpeakerTracker(channels=1)
    tracker.observe_final(0, CONSULTANT, "Let me show you the dashboard.")
    confidences = []
    for question in ["What about pricing?", "Is there an API?", "Can we host it in the EU?", "who owns support"]:
        tracker.observe_final(0, CUSTOMER, question)
        confidences.append(tracker.attribute(0, CUSTOMER).confidence)
    assert confidences == pytest.approx([0.5, 0.75, 0.875, 0.9375])


def test_statements_add_no_evidence() -> None:
    tracker = SpeakerTracker(channels=1)
    tracker.observe_final(0, CUSTOMER, "Is there an API?")
    for statement in ["Yes, we integrate with Salesforce.", "we do support SSO", "Let me share my screen"]:
        tracker.observe_final(0, CONSULTANT, statement)
        tracker.observe_final(0, CUSTOMER, statement)
    assert tracker.attribute(0, CUSTOMER) == Attribution("unknown", 0.5)


def test_equal_questions_leave_everyone_unknown() -> None:
    tracker = SpeakerTracker(channels=1)
    for text in ["What is the price?", "Is SSO included?"]:
        tracker.observe_final(0, CUSTOMER, text)
    for text in ["What are you using today?", "How many seats do you need?"]:
        tracker.observe_final(0, CONSULTANT, text)
    assert tracker.roles == {"0": "unknown", "1": "unknown"}
    assert tracker.attribute(0, CUSTOMER) == Attribution("unknown", 0.0)


def test_unseen_speaker_is_unknown_even_when_others_are_known() -> None:
    tracker = SpeakerTracker(channels=1)
    for text in ["What is the price?", "Is SSO included?"]:
        tracker.observe_final(0, CUSTOMER, text)
    assert tracker.roles == {"0": "customer"}
    assert tracker.attribute(0, 7) == Attribution("unknown", 0.0)


def test_observe_final_reports_exactly_the_changes_of_the_role_map() -> None:
    tracker = SpeakerTracker(channels=1)
    script = [
        (CUSTOMER, "Does your platform support SSO with Okta?", False),  # lead 1: 0.5, below the threshold
        (CONSULTANT, "Yes, we have a native Okta integration.", False),  # a new speaker, still nobody known
        (CUSTOMER, "How long does it usually take to get started?", True),  # lead 2: customer and consultant
        (CONSULTANT, "Most teams are up and running in about two weeks.", False),
        (CUSTOMER, "Is there a sandbox we could try", False),  # more confidence, same roles
        (2, "Hi, sorry I'm late, I'm from their IT team.", True),  # a new speaker joins as consultant
        (2, "I'll stay on mute.", False),
    ]
    for speaker_id, text, changed in script:
        assert tracker.observe_final(0, speaker_id, text) is changed, text
    assert tracker.roles == {"0": "customer", "1": "consultant", "2": "consultant"}


def test_roles_swap_when_the_evidence_shifts_and_the_change_is_reported() -> None:
    tracker = SpeakerTracker(channels=1)
    tracker.observe_final(0, 0, "What is the price?")
    assert tracker.observe_final(0, 0, "Is SSO included?") is True
    assert tracker.roles == {"0": "customer"}
    changes = [
        tracker.observe_final(0, 1, q)
        for q in ["Do you have a trial?", "Can we pay yearly?", "What about support?", "Where is data stored?"]
    ]
    assert changes == [True, False, False, True]  # lost the lead (unknown), tied, led by one, led by two
    assert tracker.roles == {"0": "consultant", "1": "customer"}
    assert tracker.attribute(0, 1) == Attribution("customer", 0.75)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("consultant,customer", ("consultant", "customer")),
        ("customer,consultant", ("customer", "consultant")),
        (" Customer , CONSULTANT ", ("customer", "consultant")),
    ],
)
def test_parse_channel_roles(value: str, expected: tuple[str, str]) -> None:
    assert parse_channel_roles(value) == expected


@pytest.mark.parametrize(
    "value",
    ["customer", "customer,customer", "unknown,customer", "boss,customer", "consultant;customer", "a,b,c", ",", ""],
)
def test_parse_channel_roles_rejects_anything_else(value: str) -> None:
    with pytest.raises(ValueError, match=r"customer and consultant once each.*got"):
        parse_channel_roles(value)
