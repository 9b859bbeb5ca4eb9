"""The knowledge base suggester: its file formats, and a ranking that would rather say nothing than be wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from presales_ws.suggesters.base import SuggesterUnavailable
from presales_ws.suggesters.knowledge_base import KnowledgeBaseSuggester, load_entries
from presales_ws.suggesters.specifics import missing, specifics, vocabulary

SAMPLE_KB = Path(__file__).resolve().parent.parent / "examples" / "knowledge_base.md"

# How customers ask (as a recogniser writes it down) -> the sample entry that answers it, or None.
ASKED: list[tuple[str, str | None]] = [
    ("does your platform support single sign on with okta", "Does your platform support single sign-on with Okta?"),
    ("Does your platform support single sign-on will occur?", "Does your platform support single sign-on with Okta?"),
    ("I was wondering whether you support SAML", "Does your platform support single sign-on with Okta?"),
    ("Do you support Azure AD?", "Does your platform support single sign-on with Okta?"),
    ("how long does it usually take to get started", "How long does onboarding usually take?"),
    ("What does the implementation look like?", "How long does onboarding usually take?"),
    ("Is our data stored in Europe?", "Is our data stored in Europe or in the United States?"),
    ("Which regions do you host in", "Is our data stored in Europe or in the United States?"),
    ("how much does it cost per user", "What is the pricing for the enterprise tier?"),
    ("What are the rate limits for your public API?", "What are the rate limits for your public API?"),
    ("Is there a limit on API calls?", "What are the rate limits for your public API?"),
    ("Does it integrate with HubSpot?", "Can you integrate with Salesforce?"),
    ("Do you have a SOC 2 report", "Are you SOC 2 certified?"),
    ("Do you sign a DPA?", "Are you GDPR compliant?"),
    ("Can we get an SLA?", "What uptime do you guarantee?"),
    ("How do you back up our data?", "How do you handle backups and disaster recovery?"),
    ("Can I see the audit trail?", "Do you keep audit logs?"),
    ("what happens to our data when we leave", "What happens to our data if we cancel?"),
    ("Is it SOC 2 compliant?", "Are you SOC 2 certified?"),  # not GDPR's "compliant"
    ("Is there an API?", "Is there a public API?"),  # not the rate limits' "Are there API limits?"
    # not in the knowledge base: no suggestion beats a wrong one
    ("Do you have an office in Singapore?", None),
    ("Do you sponsor any industry conferences this year?", None),
    ("How many people work at your company?", None),
    ("Who are your biggest competitors?", None),
    ("Which identity provider do you use today?", None),
    ("How many users will need access?", None),
    ("Is the product available in Japanese?", None),
    ("Do you have any customers in insurance?", None),
    ("When was the company founded?", None),
    ("Is the platform accessible for screen readers?", None),
    ("What's the price of the API?", None),  # not the seat pricing
    # more ways to ask what the knowledge base knows, numbers and names included
    ("Are you ISO 27001 certified?", "Are you SOC 2 certified?"),
    ("Are you SOC two certified?", "Are you SOC 2 certified?"),  # a number as a recogniser may spell it
    ("Do you integrate with Salesforce?", "Can you integrate with Salesforce?"),
    ("Does your platform support single sign-on with Octa?", "Does your platform support single sign-on with Okta?"),
    ("Do you support SSO with Okta?", "Does your platform support single sign-on with Okta?"),
    ("Do you have an iPhone app?", "Do you have mobile apps?"),
    ("Is the interface available in German?", "Which languages does the product support?"),
    ("How many API calls can we make per minute?", "What are the rate limits for your public API?"),
    ("Can we try it before we buy?", "Do you offer a free trial or a pilot?"),
    ("Do you have an SLA?", "What uptime do you guarantee?"),
    ("Can we restrict what users see?", "Can we set roles and permissions?"),
    ("Do you support SCIM?", "Do you support SCIM user provisioning?"),
    ("What is the pricing for the Enterprise tier?", "What is the pricing for the enterprise tier?"),
    # near misses: another number, version or name than the entry's; no suggestion beats the wrong one
    ("Are you SOC 1 certified?", None),
    ("Do you have a SOC 1 report?", None),
    ("Do you have SOC 2 Type 1?", None),
    ("Are you ISO 27017 certified?", None),
    ("Do you integrate with Pipedrive?", None),
    ("Can you integrate with Zoho CRM?", None),
    ("Does your platform support single sign-on with Ping Identity?", None),
    ("Do you support OneLogin for provisioning with SCIM 1.1?", None),
    ("Is our data stored in Singapore?", None),
    ("Do you offer APAC data residency?", None),
    ("Do you have a 99.99% SLA?", None),
    ("Is there a 14-day free trial?", None),
    ("Do you support TLS 1.3?", None),
    ("Is the interface available in Korean?", None),
    ("Can we migrate from Jira?", None),
    ("Is there a limit of 5,000 requests per minute?", None),
    ("What is the pricing for the Team tier?", None),
    ("Are you HIPAA compliant?", None),
]


@pytest.fixture(scope="module")
def sample() -> KnowledgeBaseSuggester:
    return KnowledgeBaseSuggester.from_file(SAMPLE_KB)


def test_precision_is_perfect_on_the_table(sample: KnowledgeBaseSuggester, capsys: pytest.CaptureFixture[str]) -> None:
    """Every suggestion the table gets is the right one; what it misses, it says nothing about."""
    got = []
    for asked, expected in ASKED:
        ranked = sample.rank(asked)
        answered = ranked is not None and ranked[1] >= sample.min_confidence
        got.append((ranked[0].question if ranked is not None and answered else None, expected))
    suggested = [(answer, expected) for answer, expected in got if answer is not None]
    precision = sum(answer == expected for answer, expected in suggested) / len(suggested)
    recall = len(suggested) / sum(expected is not None for _, expected in got)
    with capsys.disabled():
        print(f"\nknowledge base on {len(got)} questions: precision {precision:.2f}, recall {recall:.2f}")
    assert len(ASKED) >= 40
    assert precision == 1.0 and recall == 1.0  # the table holds what must be answered, and what must not


def test_the_sample_has_about_thirty_entries_each_with_an_answer() -> None:
    entries = load_entries(SAMPLE_KB)
    assert 25 <= len(entries) <= 40
    assert all(entry.answer and entry.question.endswith("?") for entry in entries)


@pytest.mark.anyio
@pytest.mark.parametrize(("asked", "expected"), ASKED)
async def test_a_question_gets_its_entry_or_nothing(
    sample: KnowledgeBaseSuggester, asked: str, expected: str | None
) -> None:
    answer = await sample.suggest(asked, [], "s_test")
    if expected is None:
        assert answer is None, sample.rank(asked)
    else:
        entry = next(e for e in sample.entries if e.question == expected)
        assert answer is not None and answer.response == entry.answer, sample.rank(asked)
        assert 0.5 <= answer.confidence <= 1.0 and answer.source == "knowledge_base"


def test_yaml_and_markdown_say_the_same(tmp_path: Path) -> None:
    (tmp_path / "kb.yaml").write_text(
        "- question: Do you support SSO?\n"
        "  also:\n    - Can we log in with Okta?\n"
        "  answer: Yes, SAML and OIDC.\n"
        "- question: Is there an API?\n"
        "  answer: A REST API.\n"
    )
    (tmp_path / "kb.md").write_text(
        "# Our answers\n\nIntro text is ignored.\n\n"
        "## Do you support SSO?\nAlso: Can we log in with Okta?\nYes, SAML and OIDC.\n\n"
        "## Is there an API?\nA REST API.\n"
    )
    assert load_entries(tmp_path / "kb.yaml") == load_entries(tmp_path / "kb.md")
    kb = KnowledgeBaseSuggester.from_file(tmp_path / "kb.yaml")
    ranked = kb.rank("can we log in with okta")
    assert ranked is not None and ranked[0].answer == "Yes, SAML and OIDC." and ranked[1] == 1.0


@pytest.mark.parametrize(
    ("name", "content", "says"),
    [
        ("missing.md", None, "cannot read"),
        ("empty.md", "# nothing here\n", "no entries"),
        ("noanswer.md", "## Do you support SSO?\n\n", "no answer"),
        ("bad.yaml", "- question: [unclosed\n", "KNOWLEDGE_BASE"),
        ("wrong.yaml", "- answer: only an answer\n", "question"),
    ],
)
def test_a_bad_knowledge_base_is_refused_with_the_reason(
    tmp_path: Path, name: str, content: str | None, says: str
) -> None:
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(SuggesterUnavailable, match=says) as raised:
        load_entries(tmp_path / name)
    assert str(raised.value).startswith("KNOWLEDGE_BASE")


def test_specifics_are_numbers_versions_and_names_spelled_one_way() -> None:
    asked = "Okay. Do you support SAML 2.0 with Okta's app, for 1,000 users? I'd like two."
    assert specifics(asked) == {"saml", "2", "okta", "1000"}  # not "Okay", "Do", "I'd": they open sentences
    assert missing({"octa", "1000"}, vocabulary("Okta, up to 1000 seats")) == 0  # a misspelt name sounds the same
    assert missing({"soc", "1"}, vocabulary("SOC 2 Type II")) == 1  # a number must be the same number
