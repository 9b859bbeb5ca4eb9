"""Several suggesters in order: the knowledge base answers what it knows at once, the HTTP service the rest."""

from __future__ import annotations

from collections.abc import Sequence

from presales_ws.suggesters.base import Answer, ContextLine, PartialSink, Suggester


class Chain:
    def __init__(self, suggesters: Sequence[Suggester]) -> None:
        self.suggesters = list(suggesters)
        self.name = "+".join(s.name for s in self.suggesters)

    async def start(self) -> None:
        for suggester in self.suggesters:
            await suggester.start()

    async def aclose(self) -> None:
        for suggester in self.suggesters:
            await suggester.aclose()

    async def suggest(
        self,
        question: str,
        context: Sequence[ContextLine],
        session_id: str,
        on_partial: PartialSink | None = None,
    ) -> Answer | None:
        for suggester in self.suggesters:
            answer = await suggester.suggest(question, context, session_id, on_partial)
            if answer is not None:
                return answer
        return None
