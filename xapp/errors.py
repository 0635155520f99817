"""Errors the xApp raises on purpose; each carries a message that says what to fix."""


class ArgoError(Exception):
    """Base of every error raised on purpose by argo-xapp."""


class ConfigError(ArgoError):
    """A setting is missing, unknown or out of range."""


class InvalidRequest(ArgoError):
    """The caller's input is unusable (blank question, unknown strategy, bad deadline …)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class StoreUnavailable(ArgoError):
    """The vector store cannot be reached or failed during a query."""


class EngineUnavailable(ArgoError):
    """The LLM engine is not loaded or failed during generation."""
