"""The knowledge base suggester: its file formats, and a ranking that would rather say nothing than be wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from presales_ws.suggesters.base import SuggesterUnavailable
from presales_ws.suggesters.knowledge_base import KnowledgeBaseSuggester, load_entries

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
]


@pytest.fixture(scope="module")
def sample() -> KnowledgeBaseSuggester:
    return KnowledgeBaseSuggester.from_file(SAMPLE_KB)


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
