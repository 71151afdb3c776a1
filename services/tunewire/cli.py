"""The ``tunewire`` command: run services, drive the embedded stack, talk to the APIs.

``tunewire up`` / ``down`` run the whole platform on this machine; ``tunewire demo`` runs the
main job on it; ``tunewire ingest`` runs one service (what a container does); ``tunewire
topics`` creates the Kafka topics of an install; ``tunewire principal`` makes an API
principal; the remaining commands call a running service's HTTP API with a bearer token.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import yaml

if TYPE_CHECKING:
    from pydantic import ValidationError

    from tunewire.core.state import objectives

SERVICES = {
    "ingest": "tunewire.ingest",
    "label": "tunewire.label",
    "train": "tunewire.train",
    "evaluate": "tunewire.evaluate",
    "serve": "tunewire.serve",
}
DEFAULT_STATE_DIR = Path(os.environ.get("TUNEWIRE_STACK_DIR", ".tunewire"))


class CliError(Exception):
    """A problem the user can fix; printed without a stack trace."""


def _invalid(exc: ValidationError) -> CliError:
    """What pydantic refused, one problem after another on one line."""
    problems = (
        f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"]
        for e in exc.errors()
    )
    return CliError("; ".join(problems))


# -- talking to a running service --------------------------------------------------------


def _client(args: argparse.Namespace) -> httpx.Client:
    service = getattr(args, "service", "ingest")
    url = args.url or os.environ.get(f"TUNEWIRE_{service.upper()}_URL")
    token = args.token or os.environ.get("TUNEWIRE_TOKEN")
    if url is None or token is None:
        stack = _stack_info(args.state_dir)
        url = url or stack["services"][service]
        token = token or stack["token"]
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


def _stack_info(state_dir: Path) -> dict[str, Any]:
    from tunewire.stack import embedded

    found = embedded.describe(state_dir)
    if found is None:
        raise CliError(
            f"no running stack in {state_dir}: start one with `tunewire up`, or pass --url and "
            "--token (or TUNEWIRE_<SERVICE>_URL and TUNEWIRE_TOKEN) for a "
            "remote install"
        )
    return found


def _call(args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    with _client(args) as client:
        response = _request(client, method, path, **kwargs)
    if response.status_code >= 400:
        raise _refusal(response)
    return response.json()


def _request(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    try:
        return client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach the service: {exc}") from None


def _refusal(response: httpx.Response) -> CliError:
    """A service's error answer as the user reads it: status, message, each detail."""
    try:
        body = response.json()
        message = body.get("message", response.text)
        details = body.get("details")
    except ValueError:
        message, details = response.text, None
    lines = [f"error {response.status_code}: {message}"]
    if isinstance(details, list):
        lines += [f"  - {json.dumps(item)}" for item in details]
    return CliError("\n".join(lines))


def _read_document(path: str) -> tuple[bytes, str]:
    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    kind = "application/json" if path.endswith(".json") else "application/yaml"
    return data, kind


def _print(value: Any, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(value, indent=2))
    else:
        print(yaml.safe_dump(value, sort_keys=False).rstrip())


# -- subcommands -------------------------------------------------------------------------


def cmd_objectives(args: argparse.Namespace) -> None:
    if args.action == "list":
        found = _call(args, "GET", "/v1/objectives")["objectives"]
        if args.json:
            _print(found, as_json=True)
            return
        print(f"{'NAME':<28} {'VERSION':>7} {'STATUS':<8} {'EVENT TYPE':<24} LABELS")
        for item in found:
            spec = item["spec"]
            print(
                f"{item['name']:<28} {item['version']:>7} {item['status']:<8} "
                f"{spec['source']['event_type']:<24} {', '.join(spec['labels'])}"
            )
        return
    if args.action in ("register", "update"):
        if not args.target:
            raise CliError(f"objectives {args.action} needs a spec file (YAML or JSON, or -)")
        body, kind = _read_document(args.target)
        if args.action == "register":
            result = _call(
                args, "POST", "/v1/objectives", content=body, headers={"content-type": kind}
            )
        else:
            name = (yaml.safe_load(body) or {}).get("name")
            if not name:
                raise CliError("the spec has no 'name'")
            result = _call(
                args, "PUT", f"/v1/objectives/{name}", content=body, headers={"content-type": kind}
            )
        print(f"{result['name']} is at version {result['version']} ({result['status']})")
        return
    if not args.target:
        raise CliError(f"objectives {args.action} needs an objective name")
    if args.action == "get":
        params = {"version": args.version} if args.version else None
        _print(
            _call(args, "GET", f"/v1/objectives/{args.target}", params=params), as_json=args.json
        )
    elif args.action == "versions":
        _print(_call(args, "GET", f"/v1/objectives/{args.target}/versions"), as_json=args.json)
    elif args.action == "retire":
        result = _call(args, "POST", f"/v1/objectives/{args.target}/retire")
        print(f"{result['name']} retired at version {result['version']}")


def cmd_events(args: argparse.Namespace) -> None:
    body, _ = _read_document(args.file)
    text = body.decode("utf-8", "replace").strip()
    if text.startswith("["):
        events = json.loads(text)
    else:
        events = [json.loads(line) for line in text.splitlines() if line.strip()]
    accepted = duplicates = 0
    for start in range(0, len(events), args.batch):
        result = _call(args, "POST", "/v1/events", json=events[start : start + args.batch])
        accepted += result["accepted"]
        duplicates += result["duplicates"]
        print(f"sent {min(start + args.batch, len(events))}/{len(events)}", file=sys.stderr)
    print(json.dumps({"accepted": accepted, "duplicates": duplicates}))


def cmd_queue(args: argparse.Namespace) -> None:
    path = f"/v1/queue/{args.objective}"
    if args.action == "status":
        status = _call(args, "GET", path)
        if args.json:
            _print(status, as_json=True)
            return
        counts = status["counts"]
        print(
            f"{args.objective}: {counts.get('open', 0)} open, {counts.get('claimed', 0)} "
            f"claimed, {counts.get('done', 0)} done; {status['examples']} examples"
        )
        for name, answered in sorted(status["annotators"].items()):
            print(f"  {name:<24} {answered} answers")
        agreement = status.get("agreement") or {}
        if agreement.get("items"):
            print(
                f"  agreement over {agreement['items']} items: "
                f"{agreement.get('percent_agreement', 0):.0f}%, "
                f"Fleiss' kappa {agreement.get('fleiss_kappa', 0):.2f}"
            )
        return
    if args.action == "claim":
        try:
            with _client(args) as client:
                response = client.post(f"{path}/claim")
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the service: {exc}") from None
        if response.status_code == 204:
            print("the queue has nothing for you right now")
            return
        if response.status_code >= 400:
            raise CliError(f"error {response.status_code}: {response.text}")
        claim = response.json()
        task = claim["task"]
        if args.json:
            _print(claim, as_json=True)
            return
        print(f"task {task['task_id']} (claim {claim['claim_id']}, until {claim['expires_at']})")
        print(f"  {task['text']}")
        for rule, label in task["hints"]:
            print(f"  hint: {rule} votes {label}")
        return
    if not args.task:
        raise CliError(f"queue {args.action} needs --task TASK_ID")
    body = {"claim_id": args.claim}
    if args.action == "submit":
        if not args.label:
            raise CliError("queue submit needs --label LABEL")
        result = _call(
            args, "POST", f"{path}/tasks/{args.task}/answer", json={**body, "label": args.label}
        )
        resolved = result.get("resolved")
        print(f"{result['status']}" + (f"; resolved as {resolved['label']}" if resolved else ""))
    elif args.action == "skip":
        if not args.claim:
            raise CliError("queue skip needs --claim CLAIM_ID")
        _call(args, "POST", f"{path}/tasks/{args.task}/skip", json=body)
        print("skipped")


def cmd_datasets(args: argparse.Namespace) -> None:
    path = f"/v1/datasets/{args.objective}"
    if args.action == "build":
        manifest = _call(args, "POST", path)
        state = "built" if manifest.pop("created") else "unchanged (already built)"
        print(f"{manifest['dataset_id']} {state}: {manifest['counts']}")
        return
    if args.action == "show":
        _print(_call(args, "GET", f"{path}/{args.dataset}"), as_json=args.json)
        return
    snapshots = _call(args, "GET", path)["snapshots"]
    if args.json:
        _print(snapshots, as_json=True)
        return
    print(f"{'DATASET':<22} {'CREATED':<26} {'TRAIN':>7} {'EVAL':>7} PARENT")
    for item in snapshots:
        counts = item.get("counts", {})
        print(
            f"{item['dataset_id']:<22} {item.get('created_at', ''):<26} "
            f"{counts.get('train', 0):>7} {counts.get('eval', 0):>7} {item.get('parent') or '-'}"
        )


# -- datasets: import and export ---------------------------------------------------------

CHAT, PROMPT_COMPLETION, PARQUET = "openai-chat", "prompt-completion", "parquet"
IMPORT_SOURCE = "tunewire/cli-import"
"""The CloudEvents source of imported examples."""
_LISTED_PROBLEMS = 20
"""Problems a refused file lists (the rest are counted): enough to see the pattern."""
_PARQUET_ROWS = 10_000
"""Rows per Parquet row group written: memory stays flat whatever the snapshot's size."""


IMPORT_HELP = """\
Reads JSON lines of examples in one of two formats, one per file (its first line's):
  OpenAI chat        {"messages": [...]}: the last user message is the input, the last
                     assistant message the answer; a system message is left out (the
                     objective prompts with its own instruction)
  prompt/completion  {"prompt": INPUT, "completion": ANSWER}
A line may carry an "id". Each example is sent to ingest as an event of the objective
(type source.event_type), so it is validated, redacted and deduplicated like any event,
then labelled and put in the next snapshot by label. Its data:
  input   the field of the text template (source.text); a template of several fields
          ("{subject}\\n{body}") gets the whole input in its LAST field, and empty
          strings in the others
  answer  generation: the one field of source.target (the answer template); extraction:
          the answer is a JSON object of the output fields, and each value goes in its
          field's source event field
  id      source.id_field: the line's "id", else "import-" and a sha256 of the input and
          answer; the event id is a hash of the data, so sending a file again adds nothing
Classification objectives cannot import: their labels come from rules and annotators, and
no event field carries one. An objective whose events or keep rules need other fields is
refused too.

Nothing is sent unless every line reads and fits the objective: each problem is listed
with its line number. Examples go in batches within ingest's request limits; events ingest
refuses are reported by line and the others sent. Prints a summary (--json: one object);
exits 1 if ingest refused any example. The token needs the producer role and a role that
reads objectives (e.g. viewer); the URL is ingest's."""

EXPORT_HELP = """\
Reads the snapshot's splits from the label service and writes, into the --output directory:
  openai-chat        train.jsonl and eval.jsonl: {"messages": [system, user, assistant]}
  prompt-completion  train.jsonl and eval.jsonl: {"prompt": INPUT, "completion": ANSWER};
                     the instruction (the system message) is in manifest.json
  parquet            train.parquet and eval.parquet: columns id, source_id and messages
                     (a list of {role, content}); needs pyarrow (tunewire[parquet])
and manifest.json, the snapshot's manifest. Texts are as the snapshot holds them: redacted
and normalised. A file is written whole or not at all. The token needs a role that reads
datasets (viewer, annotator, reviewer, operator or admin); the URL is label's."""


@dataclasses.dataclass(frozen=True)
class ImportedExample:
    """One line of an import file: the model's input, its answer, and the line's own id."""

    line: int
    input: str
    answer: str
    id: str | int | None = None


def parse_examples(lines: Iterable[bytes]) -> tuple[str, list[ImportedExample]]:
    """A file's format (OpenAI chat or prompt/completion, from its first example) and its
    examples; :class:`CliError` lists every unreadable line, or one of the other format,
    by number, so a file is imported whole or not at all."""
    found: list[ImportedExample] = []
    problems: list[str] = []
    first: tuple[str, int] | None = None
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            document = _json_line(raw, first=number == 1)
            kind = _format_of(document)
            first = first or (kind, number)
            if kind != first[0]:
                raise ValueError(
                    f"is {kind}, but line {first[1]} is {first[0]}: one format per file"
                )
            pair = _chat_pair(document["messages"]) if kind == CHAT else _completion_pair(document)
            found.append(ImportedExample(number, *pair, id=_line_id(document)))
        except ValueError as exc:
            problems.append(f"line {number} {exc}")
    if problems:
        raise _problems("the file cannot be imported", problems)
    if first is None:
        raise CliError("the file holds no examples")
    return first[0], found


def _json_line(raw: bytes, *, first: bool) -> Any:
    try:
        text = raw.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError:
        raise ValueError("is not UTF-8") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not JSON ({exc.msg} at column {exc.colno})") from None


def _format_of(document: Any) -> str:
    if not isinstance(document, dict):
        raise ValueError("is not a JSON object")
    if "messages" in document:
        return CHAT
    if "prompt" in document or "completion" in document:
        return PROMPT_COMPLETION
    raise ValueError('has neither "messages" (OpenAI chat) nor "prompt" and "completion"')


def _chat_pair(messages: Any) -> tuple[str, str]:
    """The last user message and the last assistant message. A system message is left out:
    the objective prompts every example with its own instruction."""
    if not isinstance(messages, list):
        raise ValueError('has "messages" that are not a list')
    last: dict[str, str] = {}
    for message in messages:
        if not isinstance(message, dict):
            raise ValueError("has a message that is not a JSON object")
        role, content = message.get("role"), message.get("content")
        if role in ("user", "assistant"):
            if not isinstance(content, str):
                raise ValueError(f"has a {role} message whose content is not text")
            last[role] = content
    if "user" not in last or "assistant" not in last:
        raise ValueError("needs a user message (the input) and an assistant message (the answer)")
    return _pair(last["user"], last["assistant"])


def _completion_pair(document: dict[str, Any]) -> tuple[str, str]:
    prompt, completion = document.get("prompt"), document.get("completion")
    if not isinstance(prompt, str) or not isinstance(completion, str):
        raise ValueError('needs "prompt" and "completion", both text')
    return _pair(prompt, completion)


def _pair(text: str, answer: str) -> tuple[str, str]:
    if not text.strip():
        raise ValueError("has an empty input")
    if not answer.strip():
        raise ValueError("has an empty answer")
    return text, answer


def _line_id(document: dict[str, Any]) -> str | int | None:
    value = document.get("id")
    if value is None or (isinstance(value, str) and value):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError('has an "id" that is neither text nor a whole number')


def _problems(title: str, problems: list[str]) -> CliError:
    listed = [f"  {problem}" for problem in problems[:_LISTED_PROBLEMS]]
    if len(problems) > _LISTED_PROBLEMS:
        listed.append(f"  ... and {len(problems) - _LISTED_PROBLEMS} more")
    return CliError("\n".join([f"{title}; nothing was sent:", *listed]))


@dataclasses.dataclass(frozen=True)
class ImportPlan:
    """Where an example goes in an objective's event data: the input in the text template's
    last field (any others empty), the answer where the objective takes answers from, an
    id in its id field."""

    objective: str
    event_type: str
    id_field: str
    text_fields: tuple[str, ...]
    answer_field: str = ""
    """Generation: the one field of ``source.target``."""
    output: objectives.Output | None = None
    """Extraction: the answer's fields, each with the event field (``source``) it comes from."""

    @classmethod
    def of(cls, version: objectives.ObjectiveVersion) -> ImportPlan:
        """The plan for an objective; :class:`CliError` says why one cannot import."""
        spec, source = version.spec, version.spec.source
        refused = f"objective {version.name!r} cannot import examples"
        if version.status != "active":
            raise CliError(f"{refused}: it is retired")
        if spec.task == "classification":
            raise CliError(
                f"{refused}: a classification's labels come from its rules and annotators, and "
                "no event field carries one; import into a generation or extraction objective"
            )
        plan = cls(
            objective=version.name,
            event_type=source.event_type,
            id_field=source.id_field,
            text_fields=source.template_fields(),
        )
        if spec.output is not None:
            unsourced = [n for n, f in spec.output.fields.items() if f.required and not f.source]
            if unsourced:
                raise CliError(
                    f"{refused}: the required output field(s) {', '.join(unsourced)} have no "
                    "source event field (people write them)"
                )
            answers = {f.source for f in spec.output.fields.values() if f.source}
            plan = dataclasses.replace(plan, output=spec.output)
        else:
            if len(source.target_fields()) != 1:
                raise CliError(
                    f"{refused}: its answers go in the one event field of source.target, and "
                    f"that is {source.target!r}"
                )
            answers = set(source.target_fields())
            plan = dataclasses.replace(plan, answer_field=source.target_fields()[0])
        plan._check(spec, answers)
        return plan

    def _check(self, spec: objectives.ObjectiveSpec, answers: set[str]) -> None:
        """Refuse an objective whose events or keep rules need fields an example lacks."""
        refused = f"objective {self.objective!r} cannot import examples"
        clash = sorted(answers & {*self.text_fields, self.id_field})
        if clash:
            raise CliError(f"{refused}: the answer's field(s) {', '.join(clash)} are in the text")
        filled = {*self.text_fields, self.id_field, *answers}
        needed = sorted(set(spec.source.fields) - filled)
        if needed:
            raise CliError(
                f"{refused}: its events must carry {', '.join(needed)} (source.fields), which an "
                "imported example does not have"
            )
        tested = sorted({keep.field for keep in spec.labelling.keep} - filled)
        if tested:
            raise CliError(
                f"{refused}: its keep rules test {', '.join(tested)}, which an imported example "
                "does not have, so label would leave every one out"
            )

    def event(self, example: ImportedExample) -> dict[str, Any]:
        """The example as a CloudEvent of the objective; :class:`ValueError` when its answer
        does not fit. The event id is a hash of the data, so a file sent twice is recognised."""
        data: dict[str, Any] = dict.fromkeys(self.text_fields, "")
        data[self.text_fields[-1]] = example.input
        data.update(self._answer(example.answer))
        data[self.id_field] = example.id if example.id is not None else _content_id(example)
        digest = hashlib.sha256(
            json.dumps([self.objective, data], sort_keys=True, ensure_ascii=False).encode()
        ).hexdigest()
        return {
            "specversion": "1.0",
            "id": f"import-{digest[:32]}",
            "type": self.event_type,
            "source": IMPORT_SOURCE,
            "objective": self.objective,
            "data": data,
        }

    def _answer(self, answer: str) -> dict[str, Any]:
        if self.output is None:
            return {self.answer_field: answer}
        try:
            values = json.loads(answer)
        except json.JSONDecodeError:
            raise ValueError(
                "has an answer that is not JSON (a JSON object of the output)"
            ) from None
        if not isinstance(values, dict):
            raise ValueError("has an answer that is not a JSON object of the output")
        sources = {name: f.source for name, f in self.output.fields.items() if f.source}
        problems = self.output.problems(values) + [
            f"{name} has no source event field"
            for name in values
            if name in self.output.fields and name not in sources
        ]
        if problems:
            raise ValueError(f"has an answer that does not fit: {'; '.join(problems)}")
        return {sources[name]: value for name, value in values.items()}


def _content_id(example: ImportedExample) -> str:
    """A stable source id for a line without one: a hash of its input and answer."""
    content = json.dumps([example.input, example.answer], ensure_ascii=False).encode()
    return f"import-{hashlib.sha256(content).hexdigest()[:32]}"


@dataclasses.dataclass
class _Sent:
    accepted: int = 0
    duplicates: int = 0
    refused: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """``{"line", "reason"}`` of each example ingest refused."""


def _batches(
    events: Sequence[tuple[int, bytes]], *, most: int, max_bytes: int
) -> Iterator[list[tuple[int, bytes]]]:
    """Encoded events in request-sized batches: at most ``most`` and ``max_bytes`` a body."""
    batch: list[tuple[int, bytes]] = []
    size = 1  # the brackets, less the comma the first event goes without
    for item in events:
        if batch and (len(batch) >= most or size + len(item[1]) + 1 > max_bytes):
            yield batch
            batch, size = [], 1
        batch.append(item)
        size += len(item[1]) + 1
    if batch:
        yield batch


def _post_batch(client: httpx.Client, batch: list[tuple[int, bytes]], sent: _Sent) -> None:
    """Send one batch. Ingest refuses a batch with any invalid event whole, naming each by
    its index: those are recorded as refused and the rest sent again."""
    while batch:
        body = b"[" + b",".join(encoded for _, encoded in batch) + b"]"
        response = _request(
            client, "POST", "/v1/events", content=body, headers={"content-type": "application/json"}
        )
        bad = _refused_items(response, len(batch))
        if bad:
            sent.refused += [{"line": batch[i][0], "reason": why} for i, why in sorted(bad.items())]
            batch = [item for i, item in enumerate(batch) if i not in bad]
            continue
        if response.status_code >= 400:
            raise _refusal(response)
        result = response.json()
        sent.accepted += result["accepted"]
        sent.duplicates += result["duplicates"]
        return


def _refused_items(response: httpx.Response, count: int) -> dict[int, str]:
    """The events a 422 names by index, with why; empty for any other answer."""
    if response.status_code != 422:
        return {}
    try:
        details = response.json().get("details")
    except (ValueError, AttributeError):
        return {}
    return {
        item["index"]: f"{item.get('kind')}: {item.get('message')}"
        for item in (details if isinstance(details, list) else [])
        if isinstance(item, dict)
        and isinstance(item.get("index"), int)
        and 0 <= item["index"] < count
    }


def _objective_version(args: argparse.Namespace, name: str) -> objectives.ObjectiveVersion:
    from pydantic import ValidationError

    from tunewire.core.state import objectives

    document = _call(args, "GET", f"/v1/objectives/{name}")
    try:
        return objectives.ObjectiveVersion.model_validate(document)
    except ValidationError as exc:
        raise _invalid(exc) from None


def cmd_datasets_import(args: argparse.Namespace) -> None:
    from tunewire.ingest import config as ingest_config

    if args.batch < 1:
        raise CliError("--batch must be at least 1")
    limits = ingest_config.IngestLimits()  # ingest's defaults: a request's and an event's size
    body, _ = _read_document(args.file)
    file_format, found = parse_examples(body.splitlines())
    plan = ImportPlan.of(_objective_version(args, args.objective))
    events: list[tuple[int, bytes]] = []
    problems: list[str] = []
    for example in found:
        try:
            event = plan.event(example)
        except ValueError as exc:
            problems.append(f"line {example.line} {exc}")
            continue
        encoded = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
        if len(encoded) > limits.max_event_bytes:
            problems.append(
                f"line {example.line} makes an event of {len(encoded)} bytes; ingest takes at "
                f"most {limits.max_event_bytes}"
            )
            continue
        events.append((example.line, encoded))
    if problems:
        raise _problems(f"the file does not fit objective {plan.objective!r}", problems)
    sent = _Sent()
    done = 0
    with _client(args) as client:
        for batch in _batches(events, most=args.batch, max_bytes=limits.max_body_bytes):
            try:
                _post_batch(client, batch, sent)
            except CliError as exc:
                raise CliError(
                    f"stopped after {done} of {len(events)} examples: {exc}\nsending the file "
                    "again is safe: ingest recognises the examples it already took"
                ) from None
            done += len(batch)
            print(f"sent {done}/{len(events)}", file=sys.stderr)
    summary = {
        "objective": plan.objective,
        "format": file_format,
        "examples": len(events),
        "accepted": sent.accepted,
        "duplicates": sent.duplicates,
        "refused": sent.refused,
    }
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"{len(events)} {file_format} examples to {plan.objective}: {sent.accepted} accepted, "
            f"{sent.duplicates} duplicates, {len(sent.refused)} refused"
        )
        for item in sent.refused:
            print(f"  line {item['line']}: {item['reason']}")
    if sent.refused:
        raise SystemExit(1)


def cmd_datasets_export(args: argparse.Namespace) -> None:
    write = _writer(args.format)
    path = f"/v1/datasets/{args.objective}/{args.dataset}"
    manifest = _call(args, "GET", path)
    suffix = "parquet" if args.format == PARQUET else "jsonl"
    output: Path = args.output
    files = {split: output / f"{split}.{suffix}" for split in ("train", "eval")}
    counts: dict[str, int] = {}
    try:
        output.mkdir(parents=True, exist_ok=True)
        with _client(args) as client:
            for split, target in files.items():
                counts[split] = _export_split(client, f"{path}/files/{split}", target, write)
        files["manifest"] = output / "manifest.json"
        files["manifest"].write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise CliError(f"cannot write to {output}: {exc.strerror or exc}") from None
    if args.json:
        written = {name: str(file) for name, file in files.items()}
        summary = {"dataset_id": manifest["dataset_id"], "objective": manifest["objective"]}
        print(json.dumps({**summary, "format": args.format, "counts": counts, "files": written}))
        return
    print(
        f"{manifest['dataset_id']} of {manifest['objective']}: {counts['train']} train and "
        f"{counts['eval']} eval examples as {args.format}"
    )
    for file in files.values():
        print(f"  {file}")


Writer = Callable[[Iterator[dict[str, Any]], Path], int]
"""Writes a split's snapshot lines to a file in one format; returns how many it wrote."""


def _export_split(client: httpx.Client, path: str, target: Path, write: Writer) -> int:
    """Stream one split from label into ``target``, written whole or not at all."""
    partial = target.with_name(target.name + ".part")
    try:
        with client.stream("GET", path) as response:
            if response.status_code >= 400:
                response.read()
                raise _refusal(response)
            count = write((json.loads(line) for line in response.iter_lines() if line), partial)
        partial.replace(target)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot read {path}: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return count


def _writer(file_format: str) -> Writer:
    if file_format == PARQUET:
        return _parquet_writer()
    if file_format == PROMPT_COMPLETION:
        return _jsonl_writer(
            lambda row: dict(
                zip(("prompt", "completion"), _chat_pair(row["messages"]), strict=True)
            )
        )
    return _jsonl_writer(lambda row: {"messages": row["messages"]})


def _jsonl_writer(shape: Callable[[dict[str, Any]], dict[str, Any]]) -> Writer:
    def write(rows: Iterator[dict[str, Any]], target: Path) -> int:
        count = 0
        with target.open("w", encoding="utf-8") as out:
            for row in rows:
                out.write(json.dumps(shape(row), ensure_ascii=False) + "\n")
                count += 1
        return count

    return write


def _parquet_writer() -> Writer:
    """Parquet with the snapshot's own columns (``id``, ``source_id``, ``messages``), so a
    trainer that reads chat datasets reads it as it is."""
    try:
        import pyarrow as pa  # type: ignore[import-untyped]
        import pyarrow.parquet as pq  # type: ignore[import-untyped]
    except ImportError:
        raise CliError("--format parquet needs pyarrow: pip install 'tunewire[parquet]'") from None
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    schema = pa.schema(
        [("id", pa.string()), ("source_id", pa.string()), ("messages", pa.list_(message))]
    )

    def write(rows: Iterator[dict[str, Any]], target: Path) -> int:
        count = 0
        with pq.ParquetWriter(target, schema) as out:
            while chunk := list(itertools.islice(rows, _PARQUET_ROWS)):
                out.write_table(pa.Table.from_pylist(chunk, schema=schema))
                count += len(chunk)
        return count

    return write


def _progress(run: dict[str, Any]) -> str:
    progress = run.get("progress") or {}
    if run["status"] not in ("submitted", "running") or not progress.get("total_steps"):
        return run.get("failure_reason") or "-"
    speed = progress.get("tokens_per_second", 0)
    return (
        f"step {progress['step']}/{progress['total_steps']} loss {progress.get('loss', 0):.3f} "
        f"{speed:.0f} tok/s eta {progress.get('eta_seconds', 0):.0f}s"
    )


def cmd_runs(args: argparse.Namespace) -> None:
    if args.action == "list":
        params = {"objective": args.objective} if args.objective else None
        found = _call(args, "GET", "/v1/runs", params=params)["runs"]
        if args.json:
            _print(found, as_json=True)
            return
        print(f"{'RUN':<16} {'OBJECTIVE':<22} {'STATUS':<10} {'DATASET':<22} PROGRESS / REASON")
        for run in found:
            print(
                f"{run['run_id']:<16} {run['objective']:<22} {run['status']:<10} "
                f"{run['dataset_id']:<22} {_progress(run)}"
            )
        return
    if not args.objective:
        raise CliError(f"runs {args.action} needs an objective name")
    if args.action == "submit":
        if not args.dataset:
            raise CliError("runs submit needs --dataset DATASET_ID")
        try:
            overrides = json.loads(args.overrides) if args.overrides else {}
        except ValueError as exc:
            raise CliError(f"--overrides is not JSON: {exc}") from None
        run = _call(
            args,
            "POST",
            "/v1/runs",
            json={
                "objective": args.objective,
                "dataset_id": args.dataset,
                "overrides": overrides,
            },
        )
        print(f"{run['run_id']} queued (dataset {run['dataset_id']})")
        return
    if not args.run:
        raise CliError(f"runs {args.action} needs a RUN_ID")
    if args.action == "show":
        _print(_call(args, "GET", f"/v1/runs/{args.objective}/{args.run}"), as_json=args.json)
    elif args.action == "cancel":
        if not args.reason:
            raise CliError("runs cancel needs --reason TEXT")
        run = _call(
            args,
            "POST",
            f"/v1/runs/{args.objective}/{args.run}/cancel",
            json={"reason": args.reason},
        )
        print(f"{run['run_id']} {run['status']}")


def cmd_evals(args: argparse.Namespace) -> None:
    if args.action == "list":
        params = {"objective": args.objective} if args.objective else None
        found = _call(args, "GET", "/v1/evaluations", params=params)["evaluations"]
        if args.json:
            _print(found, as_json=True)
            return
        print(f"{'RUN':<16} {'OBJECTIVE':<22} {'STATUS':<12} {'DECISION':<16} REASON")
        for item in found:
            print(
                f"{item['run_id']:<16} {item['objective']:<22} {item.get('status', ''):<12} "
                f"{item.get('decision') or '-':<16} {item.get('reason') or ''}"
            )
        return
    if not (args.objective and args.run):
        raise CliError("evals show needs an objective name and a RUN_ID")
    _print(_call(args, "GET", f"/v1/evaluations/{args.objective}/{args.run}"), as_json=args.json)


def cmd_decide(args: argparse.Namespace) -> None:
    result = _call(
        args,
        "POST",
        f"/v1/evaluations/{args.objective}/{args.run}/{args.command}",
        json={"reason": args.reason},
    )
    print(f"{args.run}: {result.get('decision', args.command)}")


def cmd_adapters(args: argparse.Namespace) -> None:
    registry = _call(args, "GET", f"/v1/registry/{args.objective}")
    if args.json:
        _print(registry, as_json=True)
        return
    champion = registry.get("champion")
    print(f"{args.objective}: champion {champion or '(none yet)'}")
    print(f"{'RUN':<16} {'STATUS':<13} {'DATASET':<22} METRICS")
    for run_id, version in sorted(
        registry.get("versions", {}).items(), key=lambda item: item[1].get("created_at", "")
    ):
        values = ", ".join(f"{k} {v:.3f}" for k, v in sorted(version.get("metrics", {}).items()))
        marker = " *" if run_id == champion else ""
        print(f"{run_id:<16} {version['status']:<13} {version['dataset_id']:<22} {values}{marker}")


def cmd_deployments(args: argparse.Namespace) -> None:
    status = _call(args, "GET", "/v1/deployments")
    if args.json:
        _print(status, as_json=True)
        return
    print(f"{'ALIAS':<28} SERVING")
    for alias, run_id in status["aliases"].items():
        champion = status["champions"].get(alias)
        note = "" if champion in (None, run_id) else f"  (champion {champion} not loaded)"
        print(f"{alias:<28} {alias}@{run_id}{note}")
    print(f"loaded {len(status['loaded'])}/{status['capacity']}: {', '.join(status['loaded'])}")
    for name, why in status["failed"].items():
        print(f"failed {name}: {why}")


def cmd_principal(args: argparse.Namespace) -> None:
    from pydantic import ValidationError

    from tunewire.core.base import principals

    token = principals.new_token()
    try:
        principal = principals.Principal(
            name=args.name,
            token_sha256=principals.token_digest(token),
            roles=frozenset(args.role),
            objectives=frozenset(args.objective) if args.objective else None,
            requests_per_minute=args.requests_per_minute,
        )
    except ValidationError as exc:
        raise _invalid(exc) from None
    entry = principal.model_dump(mode="json", exclude_defaults=True)
    entry["roles"] = sorted(entry["roles"])
    if args.json:
        _print({"token": token, "principal": entry}, as_json=True)
        return
    print(f"token for {principal.name} (shown once; hand it over, store it nowhere else):")
    print(f"  {token}")
    print("add this entry to the TUNEWIRE_PRINCIPALS list (the principals Secret):")
    print(f"  {json.dumps(entry, sort_keys=True)}")


def cmd_topics(args: argparse.Namespace) -> None:
    from pydantic import ValidationError

    from tunewire.core.base import settings
    from tunewire.core.bus import topic_admin, topics

    if min(args.partitions, args.replication_factor, args.dlq_retention_hours) < 1:
        raise CliError(
            "--partitions, --replication-factor and --dlq-retention-hours must be at least 1"
        )
    try:
        kafka = settings.WorkloadSettings().kafka
    except ValidationError as exc:
        raise _invalid(exc) from None
    layout = topic_admin.Layout(
        partitions=args.partitions,
        replication_factor=args.replication_factor,
        dead_letter_retention_ms=args.dlq_retention_hours * 3_600_000,
    )
    try:
        changes = topic_admin.ensure(kafka, layout)
    except topic_admin.TopicsRefused as exc:
        raise CliError(str(exc)) from None
    if args.json:
        _print(dataclasses.asdict(layout) | dataclasses.asdict(changes), as_json=True)
        return
    for name in changes.created:
        print(f"created {name}")
    for name in changes.retention_set:
        print(f"set the retention of {name} to {args.dlq_retention_hours} h")
    print(
        f"{len(topics.ALL)} topics: {len(changes.created)} created, "
        f"{len(changes.retention_set)} given the DLQ retention, {len(changes.unchanged)} unchanged"
    )


def cmd_rollback(args: argparse.Namespace) -> None:
    body = {"reason": args.reason, "to_run_id": args.to}
    result = _call(args, "POST", f"/v1/deployments/{args.objective}/rollback", json=body)
    print(f"{args.objective} now serves {args.objective}@{result['serving']}")


def _lag(metrics_text: str) -> int:
    """Messages the service's consumers are behind, from its ``/metrics``."""
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("tunewire_consumer_lag{"):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def cmd_status(args: argparse.Namespace) -> None:
    urls = _service_urls(args)
    token = args.token or os.environ.get("TUNEWIRE_TOKEN") or _stack_info(args.state_dir)["token"]
    headers = {"Authorization": f"Bearer {token}"}
    services: dict[str, Any] = {}
    for name, url in urls.items():
        try:
            ready = httpx.get(url + "/readyz", timeout=10)
            metrics_text = httpx.get(url + "/metrics", timeout=10).text
            services[name] = {
                "url": url,
                "ready": ready.status_code == 200,
                "waiting_for": {k: v for k, v in ready.json()["checks"].items() if v != "ok"},
                "consumer_lag": _lag(metrics_text),
            }
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            services[name] = {"url": url, "ready": False, "error": str(exc)}
    champions: dict[str, Any] = {}
    if "evaluate" in urls:
        with contextlib.suppress(httpx.HTTPError, ValueError):
            found = httpx.get(urls["evaluate"] + "/v1/registry", headers=headers, timeout=10)
            champions = {r["objective"]: r.get("champion") for r in found.json()["objectives"]}
    if args.json:
        _print({"services": services, "champions": champions}, as_json=True)
        return
    print(f"{'SERVICE':<10} {'READY':<6} {'LAG':>7}  DETAIL")
    for name, info in services.items():
        detail = info.get("error") or "; ".join(f"{k}: {v}" for k, v in info["waiting_for"].items())
        lag = info.get("consumer_lag", "-")
        print(f"{name:<10} {'yes' if info['ready'] else 'no':<6} {lag:>7}  {detail or info['url']}")
    for objective, run_id in sorted(champions.items()):
        print(f"champion  {objective}: {run_id or '(none yet)'}")
    if not all(info["ready"] for info in services.values()):
        raise SystemExit(1)


def _service_urls(args: argparse.Namespace) -> dict[str, str]:
    configured = {
        name: os.environ[f"TUNEWIRE_{name.upper()}_URL"]
        for name in SERVICES
        if f"TUNEWIRE_{name.upper()}_URL" in os.environ
    }
    if configured:
        return configured
    urls: dict[str, str] = _stack_info(args.state_dir)["services"]
    return urls


def cmd_service(args: argparse.Namespace) -> None:
    import importlib

    module = importlib.import_module(f"{SERVICES[args.command]}.__main__")
    module.main()


def cmd_up(args: argparse.Namespace) -> None:
    from tunewire.stack import embedded, processes

    stack = embedded.EmbeddedStack(args.state_dir)
    specs = [processes.ServiceSpec(name=name, module=module) for name, module in SERVICES.items()]
    print("starting the broker, the S3 endpoint and the services ...", file=sys.stderr)
    stack.up(specs, detach=True)
    info = embedded.describe(args.state_dir) or {}
    print(f"broker      {stack.bootstrap_servers}")
    print(f"s3          {stack.s3_endpoint_url} (bucket {stack.bucket})")
    for name, url in stack.service_urls.items():
        print(f"{name:<11} {url}")
    print(f"token       {info.get('token', '?')}")
    print(f"logs        {stack.log_dir}")
    print("stop with `tunewire down`")


def cmd_down(args: argparse.Namespace) -> None:
    from tunewire.stack import embedded

    embedded.EmbeddedStack(args.state_dir).down()
    print(f"stopped; S3 contents kept in {args.state_dir / 's3'}")


def cmd_demo(args: argparse.Namespace) -> None:
    from tunewire import demo

    demo.run(state_dir=args.state_dir, events=args.events, keep=args.keep, as_json=args.json)


# -- parser ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunewire",
        description="Turn business events into domain-tuned LLM adapters, continuously.",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help="where the embedded stack keeps its state, logs and S3 snapshot "
        "(default: ./.tunewire or $TUNEWIRE_STACK_DIR)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="start the embedded stack (broker, S3, services) here")
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="stop the embedded stack; S3 contents are kept")
    down.set_defaults(func=cmd_down)

    demo = sub.add_parser(
        "demo",
        help="run the main job on the embedded stack: events redacted and labelled, a "
        "snapshot, an adapter trained and evaluated, the served alias asked via the OpenAI API",
    )
    demo.add_argument("--events", type=int, default=300, help="sample tickets to send")
    demo.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    demo.add_argument("--json", action="store_true", help="print one JSON summary as the last line")
    demo.set_defaults(func=cmd_demo)

    for name in SERVICES:
        service = sub.add_parser(
            name, help=f"run the {name} service (settings from TUNEWIRE_* environment variables)"
        )
        service.set_defaults(func=cmd_service)

    def client_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", help="service URL (default: the running embedded stack's)")
        p.add_argument("--token", help="API bearer token (default: $TUNEWIRE_TOKEN or the stack's)")
        p.add_argument("--json", action="store_true", help="print JSON")

    objectives = sub.add_parser(
        "objectives",
        help="register, list, show, version or retire objectives",
        description="Objectives say which events to learn from, how to label them, how to "
        "train and which gates an adapter must pass. Specs are YAML or JSON.",
    )
    objectives.add_argument(
        "action",
        choices=["list", "get", "versions", "register", "update", "retire"],
        help="register/update take a spec file; get/versions/retire take a name",
    )
    objectives.add_argument("target", nargs="?", help="spec file (or -) or objective name")
    objectives.add_argument("--version", type=int, help="with get: a specific version")
    client_options(objectives)
    objectives.set_defaults(func=cmd_objectives)

    queue = sub.add_parser(
        "queue",
        help="the human labelling queue: status, claim, submit, skip",
        description="Work the human labelling queue of an objective from the terminal.",
    )
    queue.add_argument("action", choices=["status", "claim", "submit", "skip"])
    queue.add_argument("objective", help="objective name")
    queue.add_argument("--task", help="task id (submit, skip)")
    queue.add_argument("--claim", help="claim id from `queue claim` (submit, skip)")
    queue.add_argument("--label", help="the label to submit")
    client_options(queue)
    queue.set_defaults(func=cmd_queue, service="label")

    datasets = sub.add_parser(
        "datasets",
        help="dataset snapshots: list, show, build now; import examples, export a snapshot",
        description="Snapshots are train/eval JSONL files plus a manifest in S3, built by the "
        "label service from an objective's labelled examples.",
    )
    dataset_actions = datasets.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, meaning in (
        ("list", "an objective's snapshots, oldest first"),
        ("show", "one snapshot's manifest"),
        ("build", "build a snapshot of every labelled example now"),
    ):
        one = dataset_actions.add_parser(action, help=meaning)
        one.add_argument("objective", help="objective name")
        if action == "show":
            one.add_argument("dataset", help="dataset id")
        client_options(one)
        one.set_defaults(func=cmd_datasets, service="label")
    imports = dataset_actions.add_parser(
        "import",
        help="send a JSONL file of examples (OpenAI chat or prompt/completion) through ingest",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=IMPORT_HELP,
    )
    imports.add_argument("file", help="JSON lines of examples, or - for stdin")
    imports.add_argument(
        "--objective", required=True, help="the generation or extraction objective to feed"
    )
    imports.add_argument(
        "--batch",
        type=int,
        default=500,
        help="most examples a request (default 500; batches also stay under ingest's 1 MiB)",
    )
    client_options(imports)
    imports.set_defaults(func=cmd_datasets_import, service="ingest")
    exports = dataset_actions.add_parser(
        "export",
        help="write a snapshot's train and eval splits as OpenAI chat, prompt/completion or "
        "Parquet files",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=EXPORT_HELP,
    )
    exports.add_argument("dataset", help="dataset id (see `tunewire datasets list OBJECTIVE`)")
    exports.add_argument("--objective", required=True, help="the snapshot's objective")
    exports.add_argument(
        "--format",
        choices=[CHAT, PROMPT_COMPLETION, PARQUET],
        default=CHAT,
        help=f"the files' format (default {CHAT})",
    )
    exports.add_argument(
        "--output",
        type=Path,
        required=True,
        help="directory to write into (created if missing; files of the same names are replaced)",
    )
    client_options(exports)
    exports.set_defaults(func=cmd_datasets_export, service="label")

    events = sub.add_parser(
        "events", help="send business events (JSON array or JSON lines of CloudEvents)"
    )
    events.add_argument("action", choices=["send"])
    events.add_argument("file", help="file of events, or - for stdin")
    events.add_argument("--batch", type=int, default=500, help="events per request")
    client_options(events)
    events.set_defaults(func=cmd_events)

    runs = sub.add_parser(
        "runs",
        help="training runs: list, show, submit by hand, cancel",
        description="A run fine-tunes a LoRA adapter on one dataset snapshot. Dataset events "
        "start runs by themselves; `submit` starts another with optional overrides.",
    )
    runs.add_argument("action", choices=["list", "show", "submit", "cancel"])
    runs.add_argument("objective", nargs="?", help="objective name (optional for list)")
    runs.add_argument("run", nargs="?", help="run id (show, cancel)")
    runs.add_argument("--dataset", help="dataset id to train on (submit)")
    runs.add_argument(
        "--overrides",
        help='JSON of lora/training settings for this run, e.g. \'{"training": {"epochs": 5}}\'',
    )
    runs.add_argument("--reason", help="why the run is cancelled (cancel)")
    client_options(runs)
    runs.set_defaults(func=cmd_runs, service="train")

    evals = sub.add_parser(
        "evals",
        help="evaluations: base vs champion vs candidate, gates and decisions",
        description="Each trained adapter is scored against the base model and the current "
        "champion on the dataset's eval split, then gated.",
    )
    evals.add_argument("action", choices=["list", "show"])
    evals.add_argument("objective", nargs="?", help="objective name")
    evals.add_argument("run", nargs="?", help="run id (show)")
    client_options(evals)
    evals.set_defaults(func=cmd_evals, service="evaluate")

    for verb, meaning in (("approve", "approve"), ("reject", "reject")):
        decide = sub.add_parser(
            verb,
            help=f"{meaning} an adapter held for review (objectives with approval: manual)",
        )
        decide.add_argument("objective", help="objective name")
        decide.add_argument("run", help="run id of the held adapter")
        decide.add_argument("--reason", required=True, help="why; recorded in the registry")
        client_options(decide)
        decide.set_defaults(func=cmd_decide, service="evaluate")

    adapters = sub.add_parser(
        "adapters", help="an objective's adapter registry: versions, champion, metrics"
    )
    adapters.add_argument("objective", help="objective name")
    client_options(adapters)
    adapters.set_defaults(func=cmd_adapters, service="evaluate")

    deployed = sub.add_parser(
        "deployments", help="what the serve replica serves: aliases, loaded adapters, failures"
    )
    client_options(deployed)
    deployed.set_defaults(func=cmd_deployments, service="serve")

    rollback = sub.add_parser(
        "rollback",
        help="serve an earlier approved adapter under an objective's alias, at once",
        description="Moves the champion in the registry and reconciles the serving replica; "
        "the other replicas follow the deployment event.",
    )
    rollback.add_argument("objective", help="objective name (its alias)")
    rollback.add_argument("--to", help="run id to serve (default: the previous champion)")
    rollback.add_argument("--reason", required=True, help="why; recorded in the registry")
    client_options(rollback)
    rollback.set_defaults(func=cmd_rollback, service="serve")

    roles = ["producer", "annotator", "reviewer", "operator", "admin", "viewer", "client"]
    principal = sub.add_parser(
        "principal",
        help="make a new principal: a random token and the entry for TUNEWIRE_PRINCIPALS",
        description="Services keep only a token's sha256; this prints the token once and the "
        "entry to add to the principals Secret. Roles: producer (send events), annotator (the "
        "queue), reviewer (approve, reject), operator (runs, snapshots, rollback), admin "
        "(objectives), viewer (read only), client (the model API).",
    )
    principal.add_argument("name", help="recorded as the actor of what it does")
    principal.add_argument(
        "--role", action="append", required=True, choices=roles, help="a role (repeatable)"
    )
    principal.add_argument(
        "--objective", action="append", help="a client's scope: an objective (repeatable)"
    )
    principal.add_argument(
        "--requests-per-minute", type=int, default=600, help="a client's rate limit (default 600)"
    )
    principal.add_argument("--json", action="store_true", help="print JSON")
    principal.set_defaults(func=cmd_principal)

    topics = sub.add_parser(
        "topics",
        help="create the Kafka topics tunewire uses and set the DLQs' retention",
        description="Creates every missing tunewire topic and sets retention.ms on every DLQ, "
        "existing ones too; never deletes a topic or changes an existing one's partitions or "
        "messages. Reaches Kafka as the services do, through TUNEWIRE_KAFKA__* (production "
        "refuses PLAINTEXT unless TUNEWIRE_KAFKA__ALLOW_PLAINTEXT=true). Needs CreateTopics, "
        "DescribeConfigs and AlterConfigs on the tunewire.* topics.",
    )
    topics.add_argument(
        "--partitions", type=int, default=12, help="partitions of a created topic (default 12)"
    )
    topics.add_argument(
        "--replication-factor",
        type=int,
        default=3,
        help="replicas of a created topic's partitions (default 3)",
    )
    topics.add_argument(
        "--dlq-retention-hours",
        type=int,
        default=168,
        help="how long every DLQ keeps messages (default 168: 7 days)",
    )
    topics.add_argument("--json", action="store_true", help="print JSON")
    topics.set_defaults(func=cmd_topics)

    status = sub.add_parser(
        "status",
        help="each service's readiness and consumer lag, and every objective's champion",
        description="Reads /readyz and /metrics of every service of the running stack (or of "
        "the TUNEWIRE_<SERVICE>_URL given) and the registry; exits 1 unless all are ready.",
    )
    status.add_argument(
        "--token", help="API bearer token (default: $TUNEWIRE_TOKEN or the stack's)"
    )
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``tunewire`` console script."""
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except CliError as exc:
        print(f"tunewire: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except Exception as exc:
        from tunewire.stack import processes

        if isinstance(exc, processes.StackError):
            print(f"tunewire: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        raise


if __name__ == "__main__":
    main()
