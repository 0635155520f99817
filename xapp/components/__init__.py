"""Decomposer, Retriever, Reasoner, Synthesizer: one job each, an LLM path and a template path."""
