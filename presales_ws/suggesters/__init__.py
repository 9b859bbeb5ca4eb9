"""Suggesters: answers for the customer's questions, behind one interface (`base.Suggester`)."""

from __future__ import annotations

from presales_ws.config import Settings
from presales_ws.suggesters.base import Suggester
from presales_ws.suggesters.chain import Chain
from presales_ws.suggesters.http import HttpSuggester
from presales_ws.suggesters.knowledge_base import KnowledgeBaseSuggester


def create_suggester(settings: Settings) -> Suggester | None:
    """The knowledge base first (instant), then the HTTP service; None when neither is configured."""
    chain: list[Suggester] = []
    if settings.knowledge_base:
        chain.append(KnowledgeBaseSuggester.from_file(settings.knowledge_base, settings.suggestion_min_confidence))
    if settings.suggester_url:
        chain.append(
            HttpSuggester(
                settings.suggester_url,
                settings.suggester_timeout_s,
                settings.suggestion_min_confidence,
                settings.suggester_api_key,
            )
        )
    if not chain:
        return None
    return chain[0] if len(chain) == 1 else Chain(chain)
