"""Knowledge base: Chroma, offline embeddings, ingestion."""
