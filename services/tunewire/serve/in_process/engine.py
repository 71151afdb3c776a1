"""The base model, the LoRA adapters on it, and one ``generate`` call per batch.

An adapter adds only its low-rank weights, so ten cost little more memory than one, and
peft's mixed-adapter forward lets one ``generate`` call answer rows for different adapters
(and the base) together. Adapters come and go while the server runs, so every load checks
its files first and takes back each change it made when it fails: a broken adapter leaves
the model exactly as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import pathlib
import threading
from collections.abc import Sequence
from typing import Any

import peft
import torch
import transformers

from tunewire.serve import backend, openai_request, openai_response
from tunewire.serve.in_process import generation
from tunewire.workloads import constraints, data, models, scoring

log = logging.getLogger(__name__)

BASE_ROW = "__base__"
"""peft's name, in a mixed-adapter batch, for a row that uses no adapter."""
_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


class Engine:
    """The base model, the peft wrapper once an adapter is on it, and batched generation.

    Adding and removing adapters happen with :attr:`lock` held; :meth:`generate` takes it.
    """

    def __init__(self, loaded: models.Loaded) -> None:
        self.base = loaded.model
        self.tokenizer = loaded.tokenizer
        self.peft_model: peft.PeftModel | None = None
        self._names: frozenset[str] = frozenset()
        """The adapters fully loaded; replaced whole, so readers never see one half-loaded."""
        self.lock = threading.Lock()
        """Held while the model changes (adapters in or out) and while it generates."""
        self._tokenizer_lock = threading.Lock()
        """A fast tokenizer may refuse to be used by two threads at once."""
        self.vocabulary = constraints.Vocabulary(self.tokenizer)
        """The tokenizer as the grammars of constrained answers read it."""
        config = self.base.config
        self.context = int(
            getattr(config, "max_position_embeddings", None) or self.tokenizer.model_max_length
        )
        self.pad_id = int(self.tokenizer.pad_token_id)
        eos = self.base.generation_config.eos_token_id
        eos_ids = eos if isinstance(eos, list) else [eos]
        self.eos_ids = frozenset(
            int(i) for i in [*eos_ids, self.tokenizer.eos_token_id] if i is not None
        )
        # The model's own sampling defaults (a hub model's temperature, top_p) must not leak
        # into requests: each request's sampling is applied per row by RowsSample.
        self.base.generation_config = transformers.GenerationConfig(  # type: ignore[no-untyped-call]
            pad_token_id=self.pad_id, eos_token_id=sorted(self.eos_ids), do_sample=False
        )

    @property
    def model(self) -> torch.nn.Module:
        """What generates: the peft wrapper while an adapter is loaded, else the base."""
        return self.peft_model if self.peft_model is not None else self.base

    def adapters(self) -> set[str]:
        """Names of the adapters fully loaded."""
        return set(self._names)

    def add(self, name: str, path: pathlib.Path) -> None:
        """Load an adapter; on any failure, take back every change the attempt made."""
        _check_files(name, path)
        device = str(next(self.base.parameters()).device)
        wrapped = self.peft_model
        try:
            config = peft.PeftConfig.from_pretrained(str(path))
            _check_kind(config, path)
            if wrapped is None:
                config.inference_mode = True
                wrapped = peft.PeftModelForCausalLM(self.base, config, adapter_name=name)
            # _check_keys judges the keys by exact segment; peft's own check (a substring
            # match) would only warn.
            result = wrapped.load_adapter(
                str(path), adapter_name=name, torch_device=device, strict_adapter_check="ignore"
            )
            _check_keys(result, name=name, path=path)
        except backend.AdapterLoadError:
            self._take_back(wrapped, name)
            raise
        except Exception as exc:
            self._take_back(wrapped, name)
            raise backend.AdapterLoadError(
                f"cannot load adapter {name!r} from {path}: {type(exc).__name__}: {exc}; "
                "check that the directory holds a LoRA adapter trained on this base model "
                "and that its files are whole (copy them again from the artifact store)"
            ) from exc
        self.peft_model = wrapped
        self._names = self._names | {name}

    def remove(self, name: str) -> bool:
        """Delete an adapter if it is loaded; the last one out unwraps the base model."""
        wrapped = self.peft_model
        if wrapped is None or name not in self._names:
            return False
        self._names = self._names - {name}
        others = [n for n in wrapped.peft_config if n != name]
        if others:
            # peft warns when the active adapter goes; requests name theirs on every call.
            wrapped.set_adapter(others[0], inference_mode=True)
        wrapped.delete_adapter(name)
        if not others:
            self._unwrap()
        return True

    def prompt_ids(self, request: openai_request.OpenAIRequest) -> list[int]:
        """The request's prompt as the trainer taught the model: a conversation through
        :func:`data.prompt_ids`, a completions prompt as it is."""
        with self._tokenizer_lock:
            if request.prompt is None:
                turns = [dataclasses.asdict(m) for m in request.messages]
                return data.prompt_ids(self.tokenizer, turns)
            ids: list[int] = self.tokenizer(request.prompt)["input_ids"]
            return ids

    def label_scores(
        self,
        messages: Sequence[dict[str, str]],
        labels: Sequence[str],
        *,
        target: str,
        served_base: str,
    ) -> list[float]:
        """Each label's log-likelihood as the answer, with ``target``'s weights: the scoring
        the evaluator gave the adapter (:func:`scoring.label_logprobs`)."""
        example = {"messages": [*messages, {"role": "assistant", "content": ""}]}
        with self.lock:
            wrapped = self.peft_model
            if target != served_base and (wrapped is None or target not in self._names):
                raise openai_response.model_not_found(target)
            with contextlib.ExitStack() as scope:
                if wrapped is not None and target == served_base:
                    scope.enter_context(wrapped.disable_adapter())
                elif wrapped is not None:
                    wrapped.set_adapter(target, inference_mode=True)
                scope.enter_context(torch.inference_mode())
                with self._tokenizer_lock:
                    scores = scoring.label_logprobs(
                        self.model,
                        self.tokenizer,
                        [example],
                        labels=labels,
                        max_seq_len=self.context,
                    )
        return [float(s) for s in scores[0]]

    def decode(self, ids: list[int]) -> str:
        """Text of generated ids, special tokens (end of turn) left out."""
        with self._tokenizer_lock:
            return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def generate(self, jobs: Sequence[generation.Job], *, served_base: str) -> None:
        """Answer ``jobs`` with one ``generate`` call, each row with its own adapter."""
        with self.lock:
            adapters = self.adapters()
            rows: list[generation.Row] = []
            for job in jobs:
                if job.cancelled:
                    continue
                if job.target != served_base and job.target not in adapters:
                    job.send(generation.Failed(openai_response.model_not_found(job.target)))
                    continue
                grammar = job.ask.grammar
                rows.append(
                    generation.Row(
                        job,
                        context=self.context,
                        decode=self.decode,
                        eos_ids=self.eos_ids,
                        matcher=None if grammar is None else self.vocabulary.matcher(grammar),
                    )
                )
            if not rows:
                return
            self._generate(rows, served_base=served_base)

    def _generate(self, rows: list[generation.Row], *, served_base: str) -> None:
        input_ids, attention_mask = generation.left_pad(
            [r.job.ask.prompt for r in rows], pad_id=self.pad_id
        )
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "max_new_tokens": max(r.limit for r in rows),
            "do_sample": False,
            "stopping_criteria": transformers.StoppingCriteriaList([generation.RowsStop(rows)]),
        }
        processors: list[transformers.LogitsProcessor] = []
        if any(r.matcher is not None for r in rows):
            processors.append(generation.RowsConstrain(rows))
        if any(r.generator is not None for r in rows):
            processors.append(generation.RowsSample(rows))
        if processors:
            kwargs["logits_processor"] = transformers.LogitsProcessorList(processors)
        if self.peft_model is not None:
            kwargs["adapter_names"] = [
                BASE_ROW if r.job.target == served_base else r.job.target for r in rows
            ]
        log.debug(
            "generating a batch of %d rows for %s",
            len(rows),
            sorted({r.job.target for r in rows}),
            extra={"count": len(rows)},
        )
        for row in rows:
            row.job.send(generation.Started())
        with torch.inference_mode():
            self.model.generate(**kwargs)  # type: ignore[operator]
        for row in rows:
            row.end()

    def _take_back(self, wrapped: peft.PeftModel | None, name: str) -> None:
        if wrapped is not None and name in wrapped.peft_config:
            wrapped.delete_adapter(name)
        for module in self.base.modules():
            if isinstance(module, peft.tuners.tuners_utils.BaseTunerLayer):
                module.delete_adapter(name)
        if self.peft_model is None:
            self._unwrap()
        else:
            _strip_empty_layers(self.base)

    def _unwrap(self) -> None:
        _strip_empty_layers(self.base)
        if "peft_config" in vars(self.base):
            del self.base.peft_config
        self.peft_model = None


def _check_files(name: str, path: pathlib.Path) -> None:
    """Refuse a directory without an adapter before peft would look for it on the hub."""
    if not (path / "adapter_config.json").is_file():
        raise backend.AdapterLoadError(
            f"cannot load adapter {name!r}: {path / 'adapter_config.json'} does not exist; "
            "sync the adapter's files from the artifact store into that directory"
        )
    if not any((path / f).is_file() for f in _WEIGHT_FILES):
        raise backend.AdapterLoadError(
            f"cannot load adapter {name!r}: {path} holds no {' or '.join(_WEIGHT_FILES)}; "
            "sync the adapter's files from the artifact store into that directory"
        )


def _check_kind(config: Any, path: pathlib.Path) -> None:
    if config.peft_type != peft.PeftType.LORA:
        raise backend.AdapterLoadError(
            f"{path} holds a {config.peft_type} adapter; only LoRA adapters are served"
        )


def _check_keys(result: Any, *, name: str, path: pathlib.Path) -> None:
    """Weights that fit none of the adapter's layers, or layers left without weights, mean
    the adapter was trained on another model; peft would only warn."""
    # peft's own filter matches the name anywhere in a key; a key segment is exact, and a
    # module name can never contain a dot.
    missing = [k for k in result.missing_keys if f".{name}." in k]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        detail = (
            f"{len(missing)} weights missing (e.g. {missing[:2]})"
            if missing
            else f"{len(unexpected)} weights fit no layer (e.g. {unexpected[:2]})"
        )
        raise backend.AdapterLoadError(
            f"cannot load adapter {name!r} from {path}: {detail}; it was trained on another "
            "base model, so train it again on this one"
        )


def _strip_empty_layers(model: torch.nn.Module) -> None:
    """Put back the original module wherever a peft layer no longer holds any adapter."""
    for qualified, module in list(model.named_modules()):
        if not isinstance(module, peft.tuners.tuners_utils.BaseTunerLayer):
            continue
        if any(len(getattr(module, n)) for n in module.adapter_layer_names):
            continue
        parent_name, _, child = qualified.rpartition(".")
        setattr(model.get_submodule(parent_name), child, module.get_base_layer())
