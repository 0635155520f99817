"""argo-xapp: ARGO adaptive retrieval-augmented answering as an O-RAN near-RT RIC xApp."""

__version__ = "0.1.0"
