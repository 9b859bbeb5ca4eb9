"""Question detection on transcripts as a recogniser produces them (with and without punctuation)."""

from __future__ import annotations

import pytest

from presales_ws.questions import is_question, is_unfinished

UTTERANCES = [
    # questions, punctuated
    ("Does your platform support single sign-on with Okta?", True),
    ("We need SSO, right?", True),
    ("I'd like to know how the licensing works.", True),
    ("Could you tell me more about the roadmap.", True),
    ("What\u2019s the pricing for the enterprise tier.", True),
    # questions as an unpunctuated recogniser gives them
    ("does your platform support single sign on with okta", True),
    ("what is the pricing for the enterprise tier", True),
    ("how long does onboarding usually take", True),
    ("Can you integrate with Salesforce", True),
    ("Is there an API for exporting reports", True),
    ("Are there any limits on the number of users", True),
    ("Would it work with our existing HubSpot setup", True),
    ("Is our data encrypted at rest", True),
    ("Do I need admin rights to install the desktop app", True),
    ("Have you worked with other companies in insurance", True),
    ("What's the typical contract length", True),
    ("So, do you have a SOC 2 report", True),
    ("And where is our data stored", True),
    ("Um, which regions do you host in", True),
    ("Okay, how does the migration work", True),
    ("Yeah and who handles support after go live", True),
    ("I was wondering whether you support SAML", True),
    ("Tell me about your reporting features", True),
    # statements
    ("Yes, we integrate with Salesforce.", False),
    ("Yes, we integrate with Salesforce and HubSpot out of the box.", False),
    ("we do support SSO", False),
    ("we do support SSO with Okta and Azure AD", False),
    ("Most new customers are fully onboarded within a couple of weeks.", False),
    ("The enterprise tier is priced per seat.", False),
    ("Thanks for joining today, I will start with a short overview.", False),
    ("Our data is stored in Frankfurt", False),
    ("Let me share my screen", False),
    ("Have a look at the reporting tab", False),
    ("When you log in you'll see the dashboard", False),
    ("So what we usually recommend is a two week pilot.", False),
    ("How it works is the agent syncs every five minutes", False),
    ("However, we do support SSO", False),
    ("That sounds great", False),
    ("Okay.", False),
    ("Um", False),
    ("", False),
    ("   ", False),
    ("Does.", False),  # an auxiliary alone is not an inversion
    # more of a real call: questions
    ("Could we get a sandbox to try the integration first", True),
    ("How do you handle data deletion when a contract ends", True),
    ("is there a limit on api calls", True),
    ("Who owns the data we put into the platform?", True),
    ("Why would we pick you over the tool we have now", True),
    ("Can your platform export to Power BI", True),
    ("Will the mobile app work offline", True),
    ("What happens if your service goes down during month end", True),
    ("I'd love to know what your uptime was last year", True),
    ("Could you explain how the SCIM provisioning works", True),
    ("Does the enterprise plan include phone support", True),
    ("Which certifications do you have, SOC 2 or ISO?", True),
    ("And the pricing, is that per user or per workspace?", True),
    ("Help me understand how the migration would work", True),
    ("Are you GDPR compliant", True),
    ("Is it possible to restrict access by team", True),
    # more of a real call: statements
    ("We currently use Okta for everything.", False),
    ("Our security team will need the SOC 2 report.", False),
    ("I think that covers most of our questions.", False),
    ("You can export everything as CSV or JSON.", False),
    ("Here you can see the audit log for the workspace.", False),
    ("We'll send you a tailored quote after the call.", False),
    ("Our budget for this is set for the next quarter", False),
    ("Can't complain, the pilot went well.", False),
    ("What a great demo, thank you.", False),
    ("Where we struggle today is reporting.", False),
    ("Is what I would have said too, honestly.", False),
    ("Let me check with my colleague and get back to you", False),
]


def test_precision_and_recall_on_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    hits = [(is_question(text), expected) for text, expected in UTTERANCES]
    true_pos = sum(got and want for got, want in hits)
    precision = true_pos / max(1, sum(got for got, _ in hits))
    recall = true_pos / max(1, sum(want for _, want in hits))
    with capsys.disabled():
        print(f"\nquestion detection on {len(hits)} utterances: precision {precision:.2f}, recall {recall:.2f}")
    assert len(hits) >= 60
    assert precision >= 0.95 and recall >= 0.95


@pytest.mark.parametrize(("text", "expected"), UTTERANCES)
def test_utterance_reads_as_question_or_statement(text: str, expected: bool) -> None:
    assert is_question(text) is expected


# Where a question cut by a pause stops, as a recogniser writes it (often with a "?" it was not given).
ENDINGS = [
    ("Could you tell me how?", True),
    ("I was wondering whether", True),
    ("Do you integrate with", True),
    ("How do you integrate with?", True),  # "how" is no object for "with"
    ("Is there a limit for", True),
    ("Can we connect it to our", True),
    ("What is the pricing for the", True),
    ("Does it work with Salesforce and", True),
    ("So, um, what about", True),
    ("Could you walk me through, uh", True),
    # finished questions
    ("Could you tell me how it works?", False),
    ("What is it for?", False),  # the wh-word is what "for" governs
    ("Which CRMs do you integrate with?", False),
    ("Who do I talk to?", False),
    ("Where does the data come from", False),
    ("How do we log in?", False),  # a particle, not a preposition
    ("Do you support single sign on", False),
    ("Does your platform support single sign-on?", False),
    ("Are you SOC 2 certified", False),
    ("Do you know what the price is?", False),
    ("Can you do that?", False),
    ("", False),
]


@pytest.mark.parametrize(("text", "expected"), ENDINGS)
def test_a_question_cut_mid_sentence_reads_as_unfinished(text: str, expected: bool) -> None:
    assert is_unfinished(text) is expected
