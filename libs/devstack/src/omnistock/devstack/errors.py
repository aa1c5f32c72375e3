"""Errors raised by the embedded processes."""


class EmbeddedProcessError(RuntimeError):
    """An embedded process failed to start or stop; the message carries its log tail."""
