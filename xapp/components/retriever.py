"""Retriever: top-k passages for a query from the knowledge base (Chroma), off the event loop."""

from __future__ import annotations

import asyncio

from xapp.domain import Passage
from xapp.store.knowledge_base import KnowledgeBase


class Retriever:
    def __init__(self, kb: KnowledgeBase, top_k: int) -> None:
        if top_k < 1:
            raise ValueError("top_k must be >= 1")
        self.kb = kb
        self.top_k = top_k

    async def retrieve(self, query: str, top_k: int | None = None) -> list[Passage]:
        """Raises ``StoreUnavailable`` when Chroma fails; the pipeline decides what to do about it."""
        return await asyncio.to_thread(self.kb.query, query, top_k or self.top_k)
