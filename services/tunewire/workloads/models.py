"""Base models: the built-in small model, and one loading path for every kind of location.

An objective's ``base_model`` is a Hugging Face id, an ``s3://`` prefix, a local directory,
or ``builtin://tiny-llama``: a small Llama-architecture causal LM the project builds itself
from a seed, so the embedded stack and the tests never download from a model hub. Whatever
the location, :func:`resolve` turns it into something ``from_pretrained`` accepts (a local
directory or a hub id) and :func:`load` loads it the same way, so the trainer, the
evaluator and the serving backend all see the same model for the same ``base_model``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import tempfile
from collections.abc import Callable, Iterator

import tokenizers
import torch
import transformers
from tokenizers import decoders, pre_tokenizers, trainers

from tunewire import samples
from tunewire.core.base import errors, store
from tunewire.workloads import failures

log = logging.getLogger(__name__)

BUILTIN = "builtin://"
TINY_LLAMA = BUILTIN + "tiny-llama"
TINY_LLAMA_VERSION = "1"
"""Bumped whenever the builder's output changes, so caches of older builds are not reused."""

BOS, EOS, PAD = "<|begin_of_text|>", "<|end|>", "<|pad|>"
ROLE_MARKERS = ("<|system|>", "<|user|>", "<|assistant|>")
# Each turn is "<|role|>\n{content}<|end|>\n"; the generation prompt opens the assistant's
# turn. The end-of-turn marker is the eos token, so generation stops after one answer.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
_VOCAB_SIZE = 4096
_TOKENIZER_TICKETS = 4000
_TOKENIZER_SEED = 0
# Words of the instructions the label service writes into every example's system turn.
_INSTRUCTION_TEXT = (
    "Classify the user's text. Answer with exactly one of these labels: {labels}.\n"
    "Write the answer to the user's text. Possible answers include: {labels}.\n"
    "The {name} objective. {description}"
)


def build_tiny_llama(directory: pathlib.Path, *, seed: int = 0) -> None:
    """Write a Hugging Face model directory for the built-in small model.

    Two layers, 128 wide, four heads: it trains at thousands of tokens per second on a
    laptop CPU, which is what the embedded stack and the tests need. The weights are drawn
    from ``seed``; the tokenizer is a byte-level BPE trained on the sample tickets (fixed
    text, so it is the same for every seed). The same seed gives byte-identical files.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer()
    (directory / "tokenizer.json").write_text(tokenizer.to_str(), encoding="utf-8")
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "additional_special_tokens": list(ROLE_MARKERS),
        "chat_template": CHAT_TEMPLATE,
        "model_max_length": 512,
        "clean_up_tokenization_spaces": False,
    }
    (directory / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config, indent=2, sort_keys=True), encoding="utf-8"
    )
    config = transformers.LlamaConfig(
        vocab_size=_round_up(tokenizer.get_vocab_size(), 64),
        hidden_size=128,
        intermediate_size=352,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=tokenizer.token_to_id(BOS),
        eos_token_id=tokenizer.token_to_id(EOS),
        pad_token_id=tokenizer.token_to_id(PAD),
        tie_word_embeddings=True,
        # LoRA adapts neither the embeddings nor the (tied) output layer, so their scale
        # caps the logits an adapter can reach: at the usual 0.02 a 128-wide model cannot
        # make any token likely and the loss stalls near log(vocab); 0.1 leaves room.
        initializer_range=0.1,
    )
    _quiet()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(directory)


def _train_tokenizer() -> tokenizers.Tokenizer:
    tokenizer = tokenizers.Tokenizer(tokenizers.models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        min_frequency=2,
        special_tokens=[PAD, BOS, EOS, *ROLE_MARKERS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    return tokenizer


def _tokenizer_corpus() -> Iterator[str]:
    spec = samples.support_intent_spec()
    labels = ", ".join(spec["labels"])
    instruction = _INSTRUCTION_TEXT.format(
        labels=labels, name=spec["name"], description=spec["description"]
    )
    # Repeated so its words pass the trainer's minimum frequency and become single tokens.
    yield from [instruction] * 8
    for event, intent in samples.labelled_tickets(_TOKENIZER_TICKETS, seed=_TOKENIZER_SEED):
        yield f"{event['data']['subject']}\n{event['data']['body']}\n{intent}"


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


_BUILDERS: dict[str, Callable[[pathlib.Path], None]] = {"tiny-llama": build_tiny_llama}
_VERSIONS = {"tiny-llama": TINY_LLAMA_VERSION}


def resolve(
    base_model: str, *, artifacts: store.ArtifactStore | None, cache_dir: pathlib.Path
) -> str:
    """A local directory or hub id that ``from_pretrained`` accepts for ``base_model``.

    Built-in models are built once into ``cache_dir``; ``s3://`` prefixes are downloaded
    once into it (both appear atomically, so racing processes never see half a model); an
    existing directory is used in place; anything else is taken as a Hugging Face id.
    """
    if base_model.startswith(BUILTIN):
        return str(_builtin(base_model.removeprefix(BUILTIN), cache_dir=cache_dir))
    if base_model.startswith("s3://"):
        return str(_from_s3(base_model, artifacts=artifacts, cache_dir=cache_dir))
    path = pathlib.Path(base_model).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists() or base_model.startswith(("/", ".", "~", "file:")):
        raise failures.MissingBaseModel(
            f"base model directory {path} does not exist or is not a directory; "
            "point base_model at a model directory, an s3:// prefix or a Hugging Face id"
        )
    return base_model


def _builtin(name: str, *, cache_dir: pathlib.Path) -> pathlib.Path:
    builder = _BUILDERS.get(name)
    if builder is None:
        known = ", ".join(BUILTIN + n for n in sorted(_BUILDERS))
        raise failures.MissingBaseModel(
            f"there is no built-in model {BUILTIN + name!r}; the built-in models are: {known}"
        )
    target = cache_dir / "builtin" / f"{name}-{_VERSIONS[name]}"
    return _materialise(target, builder)


def _from_s3(
    uri: str, *, artifacts: store.ArtifactStore | None, cache_dir: pathlib.Path
) -> pathlib.Path:
    if artifacts is None:
        raise failures.MissingBaseModel(
            f"base model {uri} is in S3 but this process has no S3 settings; set TUNEWIRE_S3__*"
        )
    try:
        bucket, prefix = store.split_uri(uri)
    except errors.InvalidRequest as exc:
        raise failures.MissingBaseModel(exc.message) from None
    prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
    target = cache_dir / "s3" / bucket / prefix.strip("/")
    if target.is_dir():
        return target
    source = artifacts.for_bucket(bucket)
    keys = source.files_under(prefix)
    if not keys:
        raise failures.MissingBaseModel(
            f"no objects under {uri}; upload the model's files (config.json, weights, "
            "tokenizer) there or fix base_model"
        )

    def download(staging: pathlib.Path) -> None:
        try:
            source.download_tree(prefix, keys, staging)
        except errors.InvalidRequest as exc:
            raise failures.MissingBaseModel(f"refusing base model {uri}: {exc.message}") from None
        log.info("downloaded base model", extra={"count": len(keys)})

    return _materialise(target, download)


def _materialise(target: pathlib.Path, fill: Callable[[pathlib.Path], None]) -> pathlib.Path:
    """Create ``target`` with ``fill`` in a scratch directory beside it, then rename it.

    The rename is atomic: a process sees no model or a whole one. When another process
    wins the race, its directory is kept and this one's scratch copy is discarded.
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{target.name}-", dir=target.parent) as scratch:
        staging = pathlib.Path(scratch) / "model"
        staging.mkdir()
        fill(staging)
        try:
            staging.rename(target)
        except OSError:
            if not target.is_dir():
                raise
    return target


@dataclasses.dataclass
class Loaded:
    """A base model ready to use, and the reference it was loaded from."""

    model: transformers.PreTrainedModel
    tokenizer: transformers.PreTrainedTokenizerBase
    ref: str
    """The local directory or hub id handed to ``from_pretrained``."""


def load(
    base_model: str,
    *,
    artifacts: store.ArtifactStore | None,
    cache_dir: pathlib.Path,
    device: str = "cpu",
    dtype: torch.dtype | None = None,
) -> Loaded:
    """Resolve and load ``base_model`` with its tokenizer (float32 unless ``dtype``).

    A tokenizer without a pad token gets its eos token as pad: batches are padded, and
    padded positions are masked, so which token fills them does not matter.
    """
    ref = resolve(base_model, artifacts=artifacts, cache_dir=cache_dir)
    _quiet()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(ref)
        model = transformers.AutoModelForCausalLM.from_pretrained(ref, dtype=dtype or torch.float32)
    except (OSError, ValueError) as exc:
        raise failures.MissingBaseModel(
            f"cannot load base model {base_model!r} (from {ref}): {exc}; check base_model "
            "and, for a Hugging Face id, that the hub or its cache is reachable"
        ) from exc
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.to(torch.device(device))  # type: ignore[arg-type]  # transformers types .to oddly
    return Loaded(model=model, tokenizer=tokenizer, ref=ref)


def _quiet() -> None:
    """Workloads log JSON lines; transformers' progress bars would break them."""
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
