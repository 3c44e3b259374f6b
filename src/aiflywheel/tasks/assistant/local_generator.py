"""The local generator: a small GGUF language model run in-process on the CPU.

``LocalGenerator(model)`` takes a packaged alias (``smollm2-135m``, ``gemma3-270m``,
see ``models/generator_catalog.py``), a path to a ``.gguf`` file, or a transformers
model folder. Nothing loads until the first answer or ``warm()``.

Two backends:

- ``llama_cpp`` (``llama-cpp-python``, optional, several times faster) runs the GGUF
  file directly;
- ``transformers`` loads it with ``gguf_file=``, which converts the tokenizer and
  dequantizes the weights to fp32: 15-25 s for SmolLM2, 60-110 s for Gemma on two
  cores. The result is saved once as a plain transformers folder under
  ``$FLYWHEEL_HOME/cache/models/<name>-fp32`` (``conversion.json`` written last marks
  it complete), so later loads take a few seconds.

``backend="auto"`` picks llama_cpp when it is importable and the model is a GGUF file.
Models with a chat template (SmolLM2-Instruct) get ``prompts.build_messages``; base
models without one (Gemma 3 270M) get ``prompts.build_completion_prompt`` and stop at
``prompts.COMPLETION_STOPS``. Decoding is greedy at temperature 0, at most
``max_new_tokens`` tokens. ``stream`` runs generation in a thread and yields text as it
is decoded; the same trimming (stop strings, surrounding whitespace) applies to both
paths, so the streamed text equals the generated one. ``complete_messages`` and
``stream_messages`` answer chat messages as they are (a chat model only): what the
API's ``<feature>:generator`` model serves to another assistant's ``openai`` generator.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiflywheel.errors import MissingExtraError, ModelError, require_module
from aiflywheel.models.causal_lm import (  # the loading is shared with text_generation
    LocalSource,
    load_source,
    resolve_local_model,
)
from aiflywheel.models.generator_catalog import GENERATOR_CATALOG
from aiflywheel.settings import Settings
from aiflywheel.tasks.assistant.generators import (
    TextStream,
    answer_generation,
)
from aiflywheel.tasks.assistant.prompts import (
    COMPLETION_STOPS,
    build_completion_prompt,
    build_messages,
)
from aiflywheel.tasks.assistant.types import Chunk, Generation

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

LLAMA_CPP_INSTALL = "pip install llama-cpp-python==0.3.36"
TRANSFORMERS_INSTALL = "pip install 'aiflywheel[train,assistant]'"
# Context window asked of llama.cpp; prompts are a few passages and a question.
LLAMA_CPP_CONTEXT = 4096


# --------------------------------------------------------------------------- text


class StopTrimmer:
    """Turns raw decoded text, fed in pieces, into the answer: cut before the first stop
    string, surrounding whitespace removed. ``feed`` returns what can be shown now
    (text that might still turn into a stop string, or trailing whitespace, is held
    back); ``finish`` returns the rest. Fed the same text in any split, the outputs
    concatenate to the same answer."""

    def __init__(self, stops: Sequence[str] = ()) -> None:
        self.stops = tuple(s for s in stops if s)
        self.done = False
        self._buffer = ""
        self._emitted = 0

    def feed(self, piece: str) -> str:
        if self.done:
            return ""
        self._buffer += piece
        hits = [i for i in (self._buffer.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.done = True
            return self._emit(self._buffer[: min(hits)])
        hold = 0
        for stop in self.stops:
            for k in range(min(len(stop) - 1, len(self._buffer)), hold, -1):
                if self._buffer.endswith(stop[:k]):
                    hold = k
                    break
        return self._emit(self._buffer[: len(self._buffer) - hold])

    def finish(self) -> str:
        if self.done:
            return ""
        self.done = True
        return self._emit(self._buffer)

    def _emit(self, text: str) -> str:
        clean = text.strip()
        new = clean[self._emitted :]
        self._emitted = len(clean)
        return new

    def trim(self, text: str) -> str:
        """The whole answer for a complete raw text (a fresh trimmer's feed + finish)."""
        return self.feed(text) + self.finish()


@dataclass
class Prompt:
    """What goes into the model: the prompt text (chat template applied) and stops."""

    text: str
    chat: bool
    stops: tuple[str, ...] = ()
    messages: list[dict[str, str]] = field(default_factory=list)


@dataclass
class RunCounts:
    """Token counts of one generation, filled in while it runs."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


# --------------------------------------------------------------------------- backends


class TransformersRunner:
    """Runs a causal LM through transformers (fp32 on the CPU)."""

    backend = "transformers"

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.chat = bool(getattr(tokenizer, "chat_template", None))
        self._lock = threading.Lock()
        self._stop_cache: dict[tuple[str, ...], Any] = {}

    @classmethod
    def load(cls, source: LocalSource) -> tuple[TransformersRunner, str]:
        """Load ``source``: a folder directly, a GGUF from its converted cache folder, or
        by converting it (and saving the cache). Returns the runner and how it loaded
        (``folder``, ``cache`` or ``gguf``)."""
        model, tokenizer, how = load_source(source)
        model.eval()
        return cls(model, tokenizer), how

    @classmethod
    def _from_folder(cls, transformers: Any, folder: Path) -> TransformersRunner:
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
            model = transformers.AutoModelForCausalLM.from_pretrained(str(folder))
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"cannot load causal LM folder {folder}: {exc}") from None
        model.eval()
        return cls(model, tokenizer)

    def render(self, messages: list[dict[str, str]]) -> str:
        """The chat template applied to ``messages``, ready for the assistant's turn; a
        template that rejects the system role gets the rules in the first user turn."""
        try:
            return self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
        except Exception as exc:  # jinja raises TemplateError for unsupported roles
            if messages and messages[0]["role"] == "system" and len(messages) > 1:
                merged = [
                    {
                        "role": messages[1]["role"],
                        "content": f"{messages[0]['content']}\n\n{messages[1]['content']}",
                    },
                    *messages[2:],
                ]
                return self.tokenizer.apply_chat_template(
                    merged, add_generation_prompt=True, tokenize=False
                )
            raise ModelError(f"the model's chat template failed: {exc}") from None

    def _inputs(self, prompt: Prompt) -> dict[str, Any]:
        # A rendered chat template already holds the special tokens it needs.
        return self.tokenizer(prompt.text, return_tensors="pt", add_special_tokens=not prompt.chat)

    def _generate_kwargs(self, max_new_tokens: int, temperature: float) -> dict[str, Any]:
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": pad}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    def _stop_criteria(self, prompt: Prompt) -> list[Any]:
        """A criterion ending generation at the prompt's stop strings, built once per
        set of stops. Some tokenizers (word-level ones) cannot back it; then generation
        runs to ``max_new_tokens`` and the answer is still cut at the stop."""
        if not prompt.stops:
            return []
        if prompt.stops not in self._stop_cache:
            from transformers import StopStringCriteria

            try:
                criterion = StopStringCriteria(self.tokenizer, list(prompt.stops))
            except (ValueError, KeyError, TypeError, IndexError):
                criterion = None
            self._stop_cache[prompt.stops] = criterion
        criterion = self._stop_cache[prompt.stops]
        return [criterion] if criterion is not None else []

    def run(
        self, prompt: Prompt, *, max_new_tokens: int, temperature: float
    ) -> tuple[str, RunCounts]:
        """The raw decoded continuation and its token counts."""
        import torch
        from transformers import StoppingCriteriaList

        inputs = self._inputs(prompt)
        prompt_len = int(inputs["input_ids"].shape[1])
        with self._lock, torch.no_grad():
            output = self.model.generate(
                **inputs,
                **self._generate_kwargs(max_new_tokens, temperature),
                stopping_criteria=StoppingCriteriaList(self._stop_criteria(prompt)),
            )
        new_tokens = output[0, prompt_len:]
        text = self.tokenizer.decode(new_tokens, skip_special_tokens=True)
        return text, RunCounts(prompt_len, int(new_tokens.shape[0]))

    def run_stream(
        self, prompt: Prompt, *, max_new_tokens: int, temperature: float, counts: RunCounts
    ) -> Iterator[str]:
        """Raw decoded text pieces as they come, generation running in a thread; closing
        the iterator stops generation at the next token."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        cancel = threading.Event()
        errors: list[BaseException] = []

        class CountingStreamer(TextIteratorStreamer):
            def put(self, value: torch.Tensor) -> None:
                if self.skip_prompt and self.next_tokens_are_prompt:
                    counts.prompt_tokens = int(value.shape[-1])
                else:
                    counts.completion_tokens += int(value.numel())
                super().put(value)

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **_: Any):
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool)

        streamer = CountingStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        inputs = self._inputs(prompt)

        def work() -> None:
            try:
                with self._lock, torch.no_grad():
                    self.model.generate(
                        **inputs,
                        **self._generate_kwargs(max_new_tokens, temperature),
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList(
                            [*self._stop_criteria(prompt), Cancelled()]
                        ),
                    )
            except BaseException as exc:  # surfaced in the consuming thread
                errors.append(exc)
                streamer.end()

        thread = threading.Thread(target=work, name="local-generator", daemon=True)
        thread.start()
        try:
            yield from streamer
        finally:
            cancel.set()
            thread.join()
        if errors:
            raise ModelError(f"local generation failed: {errors[0]}") from errors[0]


class LlamaCppRunner:
    """Runs a GGUF file through llama-cpp-python."""

    backend = "llama_cpp"

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        metadata = getattr(llm, "metadata", None) or {}
        self.chat = bool(metadata.get("tokenizer.chat_template"))
        self._lock = threading.Lock()

    @classmethod
    def load(cls, source: LocalSource) -> tuple[LlamaCppRunner, str]:
        llama_cpp = require_module(
            "llama_cpp", what="the llama_cpp generator backend", install=LLAMA_CPP_INSTALL
        )
        path = source.gguf_path()
        try:
            llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=LLAMA_CPP_CONTEXT,
                n_threads=os.cpu_count() or 1,
                verbose=False,
            )
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelError(f"llama.cpp cannot load {path}: {exc}") from None
        return cls(llm), "gguf"

    def render(self, messages: list[dict[str, str]]) -> str:
        """llama.cpp applies the chat template itself; the text is only for counting."""
        return "\n\n".join(m["content"] for m in messages)

    def _count(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=not self.chat))

    def run(
        self, prompt: Prompt, *, max_new_tokens: int, temperature: float
    ) -> tuple[str, RunCounts]:
        with self._lock:
            if prompt.chat:
                result = self.llm.create_chat_completion(
                    messages=prompt.messages, max_tokens=max_new_tokens, temperature=temperature
                )
                text = result["choices"][0]["message"].get("content") or ""
            else:
                result = self.llm.create_completion(
                    prompt.text,
                    max_tokens=max_new_tokens,
                    temperature=temperature,
                    stop=list(prompt.stops) or None,
                )
                text = result["choices"][0].get("text") or ""
        usage = result.get("usage") or {}
        counts = RunCounts(
            int(usage.get("prompt_tokens") or self._count(prompt.text)),
            int(usage.get("completion_tokens") or 0),
        )
        return text, counts

    def run_stream(
        self, prompt: Prompt, *, max_new_tokens: int, temperature: float, counts: RunCounts
    ) -> Iterator[str]:
        counts.prompt_tokens = self._count(prompt.text)
        with self._lock:
            if prompt.chat:
                chunks = self.llm.create_chat_completion(
                    messages=prompt.messages,
                    max_tokens=max_new_tokens,
                    temperature=temperature,
                    stream=True,
                )
                for chunk in chunks:
                    piece = chunk["choices"][0].get("delta", {}).get("content") or ""
                    if piece:
                        counts.completion_tokens += 1
                        yield piece
            else:
                chunks = self.llm.create_completion(
                    prompt.text,
                    max_tokens=max_new_tokens,
                    temperature=temperature,
                    stop=list(prompt.stops) or None,
                    stream=True,
                )
                for chunk in chunks:
                    piece = chunk["choices"][0].get("text") or ""
                    if piece:
                        counts.completion_tokens += 1
                        yield piece


Runner = TransformersRunner | LlamaCppRunner


def llama_cpp_available() -> bool:
    """Whether llama-cpp-python is importable (checked without importing it)."""
    try:
        return importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):
        return False


# --------------------------------------------------------------------------- generator


class LocalGenerator:
    """Answers with a small local language model; see the module docstring.

    ``load_seconds`` and ``loaded_from`` (``folder``, ``cache`` or ``gguf``) describe
    the load once it happened; ``backend`` is the backend in use (or the one asked for
    before loading).
    """

    def __init__(
        self,
        model: str = "smollm2-135m",
        *,
        settings: Settings | None = None,
        backend: str = "auto",
        max_new_tokens: int = 256,
        temperature: float = 0.0,
        max_passage_chars: int = 700,
    ) -> None:
        if backend not in ("auto", "transformers", "llama_cpp"):
            raise ModelError(
                f"local generator backend must be auto, transformers or llama_cpp, got {backend!r}"
            )
        self.model = model
        self.name = f"local:{Path(model).name if os.sep in model else model}"
        self.settings = settings
        self.requested_backend = backend
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.max_passage_chars = max_passage_chars
        self.load_seconds: float | None = None
        self.loaded_from: str | None = None
        self._runner: Runner | None = None
        self._load_lock = threading.Lock()

    @property
    def backend(self) -> str:
        return self._runner.backend if self._runner is not None else self.requested_backend

    @property
    def loaded(self) -> bool:
        return self._runner is not None

    def warm(self) -> LocalGenerator:
        """Load the model now (converting and caching a GGUF file on first use)."""
        self._ensure_runner()
        return self

    def _ensure_runner(self) -> Runner:
        if self._runner is not None:
            return self._runner
        with self._load_lock:
            if self._runner is None:
                start = time.perf_counter()
                source = resolve_local_model(self.model, self.settings)
                runner, how = self._load(source)
                self.load_seconds = time.perf_counter() - start
                self.loaded_from = how
                self._runner = runner
        return self._runner

    def _load(self, source: LocalSource) -> tuple[Runner, str]:
        backend = self.requested_backend
        is_gguf = source.folder is None
        if backend == "llama_cpp" and not is_gguf:
            raise ModelError(
                f"backend llama_cpp needs a GGUF model, got the transformers folder {source.name}"
            )
        if backend == "llama_cpp" or (backend == "auto" and is_gguf and llama_cpp_available()):
            return LlamaCppRunner.load(source)
        return TransformersRunner.load(source)

    def build_prompt(
        self,
        question: str,
        passages: Sequence[Chunk],
        *,
        language: str,
        history: Sequence[dict] = (),
    ) -> Prompt:
        """The prompt this model gets: chat messages through its template when it has
        one, else the plain completion prompt with its stop strings."""
        runner = self._ensure_runner()
        if runner.chat:
            messages = build_messages(
                question,
                passages,
                language,
                history,
                max_passage_chars=self.max_passage_chars,
            )
            return Prompt(text=runner.render(messages), chat=True, messages=messages)
        text = build_completion_prompt(
            question, passages, language, max_passage_chars=self.max_passage_chars
        )
        return Prompt(text=text, chat=False, stops=COMPLETION_STOPS)

    def messages_prompt(self, messages: Sequence[dict[str, str]]) -> Prompt:
        """The prompt for chat ``messages`` taken as they are (no passages, no rules
        added): the model's chat template applied. A model without one cannot take
        messages (``ModelError``)."""
        runner = self._ensure_runner()
        if not runner.chat:
            raise ModelError(
                f"{self.name} has no chat template, so it cannot answer chat messages; "
                "use a chat (instruct) model"
            )
        clean = [{"role": m["role"], "content": m["content"]} for m in messages]
        return Prompt(text=runner.render(clean), chat=True, messages=clean)

    def generate(
        self,
        question: str,
        passages: Sequence[Chunk],
        *,
        language: str,
        history: Sequence[dict] = (),
    ) -> Generation:
        """The model's answer (greedy at temperature 0) with token counts and seconds."""
        prompt = self.build_prompt(question, passages, language=language, history=history)
        return self._complete(prompt, len(passages))

    def complete_messages(
        self,
        messages: Sequence[dict[str, str]],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
    ) -> Generation:
        """The model's reply to chat ``messages`` as they are: what the API's
        ``<feature>:generator`` model answers with (a request's ``max_tokens`` and
        ``temperature`` override the recipe's, never above its ``max_new_tokens``)."""
        limits = self._limits(max_new_tokens, temperature)
        return self._complete(self.messages_prompt(messages), 0, *limits)

    def stream(
        self,
        question: str,
        passages: Sequence[Chunk],
        *,
        language: str,
        history: Sequence[dict] = (),
    ) -> TextStream:
        """Text deltas as the model writes them; once exhausted, ``.result`` holds the
        ``Generation`` (same text as ``generate`` at temperature 0)."""
        prompt = self.build_prompt(question, passages, language=language, history=history)
        return self._stream(prompt, len(passages))

    def stream_messages(
        self,
        messages: Sequence[dict[str, str]],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
    ) -> TextStream:
        """``complete_messages`` as text deltas."""
        limits = self._limits(max_new_tokens, temperature)
        return self._stream(self.messages_prompt(messages), 0, *limits)

    def _limits(self, max_new_tokens: int | None, temperature: float | None) -> tuple[int, float]:
        tokens = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        return min(tokens, self.max_new_tokens), (
            self.temperature if temperature is None else temperature
        )

    def _complete(
        self,
        prompt: Prompt,
        n_passages: int,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
    ) -> Generation:
        start = time.perf_counter()
        raw, counts = self._ensure_runner().run(
            prompt,
            max_new_tokens=max_new_tokens or self.max_new_tokens,
            temperature=self.temperature if temperature is None else temperature,
        )
        text = StopTrimmer(prompt.stops).trim(raw)
        return answer_generation(
            text,
            n_passages,
            generator=self.name,
            started=start,
            prompt_tokens=counts.prompt_tokens,
            completion_tokens=counts.completion_tokens,
        )

    def _stream(
        self,
        prompt: Prompt,
        n_passages: int,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
    ) -> TextStream:
        runner = self._ensure_runner()
        counts = RunCounts()
        start = time.perf_counter()

        def deltas() -> Iterator[str]:
            trimmer = StopTrimmer(prompt.stops)
            pieces = runner.run_stream(
                prompt,
                max_new_tokens=max_new_tokens or self.max_new_tokens,
                temperature=self.temperature if temperature is None else temperature,
                counts=counts,
            )
            try:
                for piece in pieces:
                    out = trimmer.feed(piece)
                    if out:
                        yield out
                    if trimmer.done:
                        break
            finally:
                pieces.close()
            rest = trimmer.finish()
            if rest:
                yield rest

        def finish(text: str) -> Generation:
            return answer_generation(
                text,
                n_passages,
                generator=self.name,
                started=start,
                prompt_tokens=counts.prompt_tokens,
                completion_tokens=counts.completion_tokens,
            )

        return TextStream(deltas(), finish)


def missing_local_models() -> dict[str, str]:
    """Packaged generator aliases whose package is not installed, with the pip line."""
    from aiflywheel.models.catalog import package_dir

    missing = {}
    for alias, entry in GENERATOR_CATALOG.items():
        try:
            package_dir(entry.package, entry.install)
        except MissingExtraError:
            missing[alias] = entry.install
    return missing
