"""The OpenAI-compatible generator: answers through any ``/v1/chat/completions`` server.

vLLM, Ollama, llama.cpp's server, a cloud API or another ``flywheel serve`` all speak
this protocol; ``base_url`` picks one (null means api.openai.com). The API key is read
from the environment variable named by ``api_key_env`` when the client is first
needed, never stored in a recipe; servers without auth get a placeholder key.

Failures map to the project's errors, each naming the URL: an unreachable server
(connection refused, DNS) is ``UpstreamError``, no answer within ``timeout_s`` is
``UpstreamTimeout``, an HTTP error status is ``UpstreamError`` with the status and the
server's message. The client retries ``max_retries`` times on connection errors and
5xx answers.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from aiflywheel.errors import SettingsError, UpstreamError, UpstreamTimeout, require_module
from aiflywheel.tasks.assistant.generators import (
    ASSISTANT_INSTALL,
    TextStream,
    answer_generation,
)
from aiflywheel.tasks.assistant.prompts import build_messages
from aiflywheel.tasks.assistant.types import Chunk, Generation

OPENAI_DEFAULT_URL = "https://api.openai.com/v1"
# Sent to servers that need no key (the client refuses to start without one).
PLACEHOLDER_KEY = "no-key-needed"


class OpenAIGenerator:
    """Answers with a model behind an OpenAI-compatible chat completions endpoint."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str | None = None,
        timeout_s: float = 20.0,
        max_retries: int = 1,
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        max_passage_chars: int = 700,
    ) -> None:
        self.model = model
        self.base_url = (base_url or OPENAI_DEFAULT_URL).rstrip("/")
        self.api_key_env = api_key_env or (None if base_url else "OPENAI_API_KEY")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.max_passage_chars = max_passage_chars
        self.name = f"openai:{model}"
        self._client: Any = None
        self._client_lock = threading.Lock()

    def _api_key(self) -> str:
        if self.api_key_env is None:
            return PLACEHOLDER_KEY
        value = os.environ.get(self.api_key_env, "").strip()
        if not value:
            raise SettingsError(
                f"environment variable {self.api_key_env} (generator.api_key_env) is not set; "
                f"expected the API key for {self.base_url}"
            )
        return value

    @property
    def client(self) -> Any:
        """The ``openai.OpenAI`` client, made on first use."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    openai = require_module(
                        "openai", what="the openai generator", install=ASSISTANT_INSTALL
                    )
                    self._client = openai.OpenAI(
                        api_key=self._api_key(),
                        base_url=self.base_url,
                        timeout=self.timeout_s,
                        max_retries=self.max_retries,
                    )
        return self._client

    def warm(self) -> OpenAIGenerator:
        """Make the client now (checks the API key variable); nothing is sent."""
        _ = self.client
        return self

    def _request(
        self, question: str, passages: Sequence[Chunk], language: str, history: Sequence[dict]
    ) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": build_messages(
                question, passages, language, history, max_passage_chars=self.max_passage_chars
            ),
            "max_tokens": self.max_new_tokens,
            "temperature": self.temperature,
        }

    def _error(self, exc: Exception) -> UpstreamError:
        """The project's error for an exception the openai client raised."""
        import openai

        url = f"{self.base_url}/chat/completions"
        if isinstance(exc, openai.APITimeoutError):
            return UpstreamTimeout(
                f"openai endpoint {url} did not answer within timeout_s={self.timeout_s:g} s"
            )
        if isinstance(exc, openai.APIStatusError):
            message = _server_message(exc)
            return UpstreamError(
                f"openai endpoint {url} answered HTTP {exc.status_code}: {message}"
            )
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return UpstreamError(f"openai endpoint {url} is unreachable: {_one_line(cause)}")
        return UpstreamError(f"openai endpoint {url} failed: {_one_line(exc)}")

    def generate(
        self,
        question: str,
        passages: Sequence[Chunk],
        *,
        language: str,
        history: Sequence[dict] = (),
    ) -> Generation:
        """One chat completion; token counts from the server's ``usage``."""
        client = self.client
        import openai

        start = time.perf_counter()
        try:
            response = client.chat.completions.create(
                **self._request(question, passages, language, history)
            )
        except openai.OpenAIError as exc:
            raise self._error(exc) from None
        choices = getattr(response, "choices", None) or []
        if not choices:
            raise UpstreamError(
                f"openai endpoint {self.base_url}/chat/completions answered without choices"
            )
        text = (choices[0].message.content or "").strip()
        usage = getattr(response, "usage", None)
        return answer_generation(
            text,
            len(passages),
            generator=self.name,
            started=start,
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
        )

    def stream(
        self,
        question: str,
        passages: Sequence[Chunk],
        *,
        language: str,
        history: Sequence[dict] = (),
    ) -> TextStream:
        """Text deltas from a streamed completion (``stream=True``, server-sent events);
        leading whitespace of the answer is dropped as ``generate`` strips it. Token
        counts are filled when the server sends ``usage`` in a chunk."""
        client = self.client
        import openai

        request = self._request(question, passages, language, history)
        usage: dict[str, int] = {}
        start = time.perf_counter()

        def deltas() -> Iterator[str]:
            try:
                chunks = client.chat.completions.create(**request, stream=True)
            except openai.OpenAIError as exc:
                raise self._error(exc) from None
            started = False
            pending = ""  # whitespace held back: the answer's end is stripped
            try:
                for chunk in chunks:
                    chunk_usage = getattr(chunk, "usage", None)
                    if chunk_usage is not None:
                        usage["prompt"] = int(getattr(chunk_usage, "prompt_tokens", 0) or 0)
                        usage["completion"] = int(getattr(chunk_usage, "completion_tokens", 0) or 0)
                    choices = getattr(chunk, "choices", None) or []
                    piece = (choices[0].delta.content or "") if choices else ""
                    if not started:
                        piece = piece.lstrip()
                        started = bool(piece)
                    if not piece:
                        continue
                    text = pending + piece
                    body = text.rstrip()
                    pending = text[len(body) :]
                    if body:
                        yield body
            except openai.OpenAIError as exc:
                raise self._error(exc) from None
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()

        def finish(text: str) -> Generation:
            return answer_generation(
                text,
                len(passages),
                generator=self.name,
                started=start,
                prompt_tokens=usage.get("prompt", 0),
                completion_tokens=usage.get("completion", 0),
            )

        return TextStream(deltas(), finish)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def _server_message(exc: Any) -> str:
    """The server's error message from an ``APIStatusError`` body, else its text."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return _one_line(Exception(str(inner["message"])))
        if isinstance(inner, str):
            return _one_line(Exception(inner))
        if body.get("detail"):
            return _one_line(Exception(str(body["detail"])))
    response = getattr(exc, "response", None)
    text = getattr(response, "text", "") if response is not None else ""
    return _one_line(Exception(text or getattr(exc, "message", "") or "no message"))
