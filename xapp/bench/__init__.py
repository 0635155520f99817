"""Measurements: ``argo-xapp bench latency`` (per-component latency, optional HF-transformers baseline) and
``argo-xapp bench accuracy`` (ORAN-Bench multiple choice by strategy and difficulty), with CSVs and plots."""
