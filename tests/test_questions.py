"""Question detection on transcripts as a recogniser produces them (with and without punctuation)."""

from __future__ import annotations

import pytest

from presales_ws.questions import is_question

QUESTIONS = [
    "Does your platform support single sign-on with Okta?",
    "does your platform support single sign on with okta",
    "What is the pricing for the enterprise tier",
    "How long does onboarding usually take",
    "Can you integrate with Salesforce",
    "Is there an API for exporting reports",
    "So, do you have a SOC 2 report",
    "And where is our data stored",
    "Um, which regions do you host in",
    "I was wondering whether you support SAML",
    "I'd like to know how the licensing works.",
    "Could you tell me more about the roadmap.",
    "Are there any limits on the number of users",
    "Would it work with our existing HubSpot setup",
    "Okay, how does the migration work",
    "We need SSO, right?",
]

STATEMENTS = [
    "Yes, we integrate with Salesforce and HubSpot out of the box.",
    "we do support SSO with Okta and Azure AD",
    "Most new customers are fully onboarded within a couple of weeks.",
    "The enterprise tier is priced per seat.",
    "Thanks for joining today.",
    "I will start with a short overview.",
    "Our data is stored in Frankfurt.",
    "That sounds great",
    "Let me share my screen",
    "Okay.",
    "",
    "   ",
    "Does.",  # an auxiliary alone is not an inversion
]


@pytest.mark.parametrize("text", QUESTIONS)
def test_question_is_detected(text: str) -> None:
    assert is_question(text)


@pytest.mark.parametrize("text", STATEMENTS)
def test_statement_is_not_a_question(text: str) -> None:
    assert not is_question(text)
