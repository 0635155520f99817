"""Retriever: top-k passages for a query from the knowledge base (Chroma), off the event loop."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from concurrent.futures import ThreadPoolExecutor

from xapp.domain import Passage
from xapp.store.knowledge_base import KnowledgeBase

# Queries get threads of their own: a hung Chroma holds each query's thread until its HTTP timeout, and in
# asyncio's shared pool those would starve the template synthesis and everything else that runs in threads.
STORE_THREADS = 4
_executor = ThreadPoolExecutor(max_workers=STORE_THREADS, thread_name_prefix="argo-store")


class Retriever:
    def __init__(self, kb: KnowledgeBase, top_k: int) -> None:
        if top_k < 1:
            raise ValueError("top_k must be >= 1")
        self.kb = kb
        self.top_k = top_k

    async def retrieve(self, query: str, top_k: int | None = None) -> list[Passage]:
        """Raises ``StoreUnavailable`` when Chroma fails; the caller bounds the wait (a Chroma query cannot be
        aborted) and decides what to do about it."""
        call = functools.partial(contextvars.copy_context().run, self.kb.query, query, top_k or self.top_k)
        return await asyncio.get_running_loop().run_in_executor(_executor, call)  # the caller's trace context
