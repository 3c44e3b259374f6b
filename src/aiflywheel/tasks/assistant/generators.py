"""Answer generators: what writes the assistant's answer from retrieved passages.

A generator gets the customer's question and the passages the retriever found, numbered
[1], [2], ... in the order given (``Chunk.passage`` is the text it reads), and returns a
``Generation`` whose text cites them as [n]. Three kinds, picked by ``GeneratorSettings``:

- ``extractive``: no language model; picks the passage sentences that best answer the
  question and quotes them verbatim with their citations (``extractive.py``).
- ``local``: a small GGUF model run in-process, the packaged ``smollm2-135m`` or
  ``gemma3-270m`` or a path (``local_generator.py``).
- ``openai``: any OpenAI-compatible ``/v1/chat/completions`` server: vLLM, Ollama, a
  cloud API, another ``flywheel serve`` (``openai_generator.py``).

``make_generator`` is cheap: models load on first use or on ``warm()``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from aiflywheel.errors import RecipeError
from aiflywheel.tasks.assistant.grounding import citation_numbers
from aiflywheel.tasks.assistant.types import Chunk, Generation

if TYPE_CHECKING:
    from aiflywheel.settings import Settings

ASSISTANT_INSTALL = "pip install 'aiflywheel[assistant]'"
LOCAL_GENERATOR_ALIASES = ("smollm2-135m", "gemma3-270m")
DEFAULT_LOCAL_MODEL = "smollm2-135m"
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class GeneratorSettings(BaseModel):
    """How the assistant writes answers (the recipe's ``assistant.generator`` section)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["extractive", "local", "openai"] = Field(
        "extractive",
        description="'extractive' quotes the best passage sentences (no model); 'local' runs "
        "a small GGUF model in-process; 'openai' calls an OpenAI-compatible server.",
    )
    model: str | None = Field(
        None,
        description="For 'local': 'smollm2-135m' (English), 'gemma3-270m' (multilingual base "
        "model), or a path to a .gguf file or a transformers folder; default smollm2-135m. "
        "For 'openai': the model name the server knows (required).",
    )
    base_url: str | None = Field(
        None,
        description="For 'openai': the server's base URL, e.g. http://localhost:8000/v1 "
        "(vLLM), http://localhost:11434/v1 (Ollama); null means api.openai.com.",
    )
    api_key_env: str | None = Field(
        None,
        description="For 'openai': name of the environment variable holding the API key "
        "(never the key itself); null sends a placeholder key, for servers without auth "
        "(OPENAI_API_KEY when base_url is null).",
    )
    max_new_tokens: int = Field(
        256, ge=1, le=4096, description="Most tokens a model may generate for one answer."
    )
    temperature: float = Field(
        0.0, ge=0.0, le=2.0, description="Sampling temperature; 0 decodes greedily (reproducible)."
    )
    timeout_s: float = Field(
        20.0, gt=0, le=600, description="For 'openai': seconds to wait for the server per request."
    )
    max_retries: int = Field(
        1, ge=0, le=5, description="For 'openai': retries on connection errors and 5xx answers."
    )
    backend: Literal["auto", "transformers", "llama_cpp"] = Field(
        "auto",
        description="For 'local': 'llama_cpp' (fast; needs llama-cpp-python), 'transformers', "
        "or 'auto' (llama_cpp when installed, else transformers).",
    )
    max_sentences: int = Field(
        3, ge=1, le=10, description="For 'extractive': most passage sentences in one answer."
    )

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME_RE.match(value):
            raise ValueError(
                "must name an environment variable such as OPENAI_API_KEY, not hold the key; "
                f"got a value of {len(value)} characters"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _model_for_kind(self) -> GeneratorSettings:
        if self.kind == "openai" and not self.model:
            raise ValueError("model is required for kind 'openai' (the server's model name)")
        return self


@runtime_checkable
class AnswerGenerator(Protocol):
    """Writes an answer from numbered passages.

    ``generate`` returns the whole ``Generation``; ``stream`` yields text deltas whose
    concatenation is the text ``generate`` would return (for a deterministic
    generator). ``history`` is earlier ``{"role", "content"}`` turns. ``warm`` loads
    whatever is slow to load, so the first request does not pay for it.
    """

    name: str

    def generate(
        self,
        question: str,
        passages: Sequence[Chunk],
        *,
        language: str,
        history: Sequence[dict] = (),
    ) -> Generation: ...

    def stream(
        self,
        question: str,
        passages: Sequence[Chunk],
        *,
        language: str,
        history: Sequence[dict] = (),
    ) -> Iterator[str]: ...

    def warm(self) -> AnswerGenerator: ...


class TextStream(Iterator[str]):
    """An iterator of text deltas that keeps the finished ``Generation``.

    ``result`` is ``None`` until the iterator is exhausted; then it holds the full text,
    the citations and the token counts. ``close()`` stops the underlying generation.
    """

    def __init__(self, deltas: Iterator[str], finish: Callable[[str], Generation]) -> None:
        self._deltas = deltas
        self._finish = finish
        self._parts: list[str] = []
        self.result: Generation | None = None

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        try:
            delta = next(self._deltas)
        except StopIteration:
            if self.result is None:
                self.result = self._finish("".join(self._parts))
            raise
        self._parts.append(delta)
        return delta

    def close(self) -> None:
        close = getattr(self._deltas, "close", None)
        if close is not None:
            close()


def cited_passages(text: str, n: int) -> list[int]:
    """Passage numbers cited in ``text`` ([1], [2][3], [1, 2], [1-3], 【1】, ［1］), in order
    of first appearance, keeping only those in 1..n."""
    return [number for number in citation_numbers(text) if 1 <= number <= n]


def answer_generation(
    text: str,
    n_passages: int,
    *,
    generator: str,
    started: float | None = None,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
) -> Generation:
    """A generator's finished answer: the passages it cites among ``n_passages`` and the
    seconds since ``started`` (a ``time.perf_counter()`` reading)."""
    return Generation(
        text=text,
        cited=cited_passages(text, n_passages),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        generator=generator,
        seconds=time.perf_counter() - started if started is not None else 0.0,
    )


def parse_generator_settings(config: GeneratorSettings | dict) -> GeneratorSettings:
    """Validate a generator section; a bad value raises a one-line ``RecipeError``."""
    if isinstance(config, GeneratorSettings):
        return config
    from aiflywheel.recipe import describe_validation_error

    try:
        return GeneratorSettings.model_validate(config)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["loc"] and first["loc"][0] == "api_key_env":
            # The value may be a pasted API key: name the problem, never echo the value.
            message = first["msg"].removeprefix("Value error, ")
            raise RecipeError(f"generator.api_key_env: {message}") from None
        raise RecipeError(
            f"generator: {describe_validation_error(exc, GeneratorSettings)}"
        ) from None


def make_generator(
    config: GeneratorSettings | dict, settings: Settings | None = None
) -> AnswerGenerator:
    """The generator a generator section asks for; nothing heavy loads until first use
    (or ``warm()``). ``settings`` gives the cache folder for converted local models."""
    parsed = parse_generator_settings(config)
    if parsed.kind == "extractive":
        from aiflywheel.tasks.assistant.extractive import ExtractiveGenerator

        return ExtractiveGenerator(max_sentences=parsed.max_sentences)
    if parsed.kind == "local":
        from aiflywheel.tasks.assistant.local_generator import LocalGenerator

        return LocalGenerator(
            parsed.model or DEFAULT_LOCAL_MODEL,
            settings=settings,
            backend=parsed.backend,
            max_new_tokens=parsed.max_new_tokens,
            temperature=parsed.temperature,
        )
    from aiflywheel.tasks.assistant.openai_generator import OpenAIGenerator

    return OpenAIGenerator(
        parsed.model or "",
        base_url=parsed.base_url,
        api_key_env=parsed.api_key_env,
        timeout_s=parsed.timeout_s,
        max_retries=parsed.max_retries,
        max_new_tokens=parsed.max_new_tokens,
        temperature=parsed.temperature,
    )
