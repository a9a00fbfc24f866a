"""What a request's record keeps of its text: the conversation and the answer, as ``store.prompts`` says
(``full``, ``hash`` or ``none``), passed through ``store.redact`` first when one is configured."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import orjson

from tierwise.config import RouterConfig
from tierwise.errors import ConfigError
from tierwise.messages import ChatRequest, ChatResponse
from tierwise.redact import load_redactor


class TextKeeper:
    def __init__(self, mode: str, redact: Callable[[str], str] | None = None) -> None:
        self.mode = mode
        self._redact = redact

    @classmethod
    def from_config(cls, config: RouterConfig) -> TextKeeper:
        redact = None
        if config.store.redact is not None:
            try:
                redact = load_redactor(config.store.redact)
            except ValueError as exc:
                raise ConfigError(f"store.redact: {exc}") from None
        return cls(config.store.prompts, redact)

    def prompt(self, request: ChatRequest) -> str | None:
        """The conversation as JSON (redacted), its SHA-256 (of the text as sent), or nothing."""
        if self.mode == "none":
            return None
        if self.mode == "hash" or self._redact is None:
            conversation = orjson.dumps([{"role": m.role, "content": m.content} for m in request.messages])
            if self.mode == "hash":
                return "sha256:" + hashlib.sha256(conversation).hexdigest()
            return conversation.decode()
        redacted = [{"role": m.role, "content": self._content(m.content)} for m in request.messages]
        return orjson.dumps(redacted).decode()

    def response_text(self, response: ChatResponse | None) -> str | None:
        """The answer's text (redacted) when prompts are kept in full."""
        if response is None or response.content is None or self.mode != "full":
            return None
        return response.content if self._redact is None else self._text(response.content)

    def _text(self, text: str) -> str:
        assert self._redact is not None
        try:
            return self._redact(text)
        except Exception as exc:  # never keep what the hook was meant to mask
            return f"[not stored: store.redact failed ({exc.__class__.__name__})]"

    def _content(self, content: Any) -> Any:
        if isinstance(content, str):
            return self._text(content)
        if isinstance(content, list):
            return [
                {**part, "text": self._text(part["text"])}
                if isinstance(part, dict) and isinstance(part.get("text"), str)
                else part
                for part in content
            ]
        return content
