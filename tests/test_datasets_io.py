"""Bringing examples in (``tunewire datasets import``) and taking snapshots out (``tunewire
datasets export``): the line formats, where an example goes in an objective's events, and a
round trip through ingest, label and the label service's file route, read back with the
Hugging Face ``datasets`` library as a trainer would."""

from __future__ import annotations

import contextlib
import copy
import datetime
import io
import json
import random
import uuid
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from tests.support.stacks import TOKEN, TOKENS
from tests.support.waiting import eventually
from tunewire import cli
from tunewire.core.state import objectives
from tunewire.stack import embedded

REPLIES: dict[str, Any] = {
    "name": "replies",
    "task": "generation",
    "description": "Answer support tickets.",
    "source": {
        "event_type": "ticket.closed",
        "text": "{subject}\n{body}",
        "id_field": "ticket_id",
        "target": "{resolution}",
    },
    "base_model": "builtin://tiny-llama",
}
REPORTS: dict[str, Any] = {
    "name": "reports",
    "task": "extraction",
    "source": {"event_type": "maintenance.logged", "text": "{log}", "id_field": "entry_id"},
    "output": {
        "fields": {
            "component": {"source": "component"},
            "severity": {"enum": ["low", "medium", "high"], "source": "severity"},
            "downtime_hours": {"type": "number", "required": False, "source": "downtime"},
        }
    },
    "base_model": "builtin://tiny-llama",
}
WORDS = (
    "parcel invoice kettle router login refund courier warranty screen battery hinge cable "
    "voucher address driver pallet label printer charger filter valve drum belt sensor pump "
    "motor fan seal gear clutch lamp socket switch tablet laptop phone camera lens strap"
)


def version(
    document: dict[str, Any], *, status: Literal["active", "retired"] = "active"
) -> objectives.ObjectiveVersion:
    spec = objectives.parse_spec(document)
    return objectives.ObjectiveVersion(
        name=spec.name,
        version=1,
        status=status,
        spec=spec,
        created_at=datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC),
        created_by="test",
    )


def lines(*documents: Any) -> list[bytes]:
    return [json.dumps(d).encode() if not isinstance(d, bytes) else d for d in documents]


def run_cli(*args: str) -> tuple[int, str, str]:
    """The command run in this process, as its console script would: status, out, err."""
    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli.main(list(args))
        except SystemExit as exc:
            code = exc.code
    return (code if isinstance(code, int) else 1), out.getvalue(), err.getvalue()


# -- reading lines -------------------------------------------------------------------------


def test_chat_lines_take_the_last_user_and_assistant_messages_and_leave_the_system_out() -> None:
    chat = {
        "messages": [
            {"role": "system", "content": "You are helpful."},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "first answer"},
            {"role": "user", "content": "Where is my parcel?"},
            {"role": "assistant", "content": "It ships today."},
        ]
    }
    found_format, found = cli.parse_examples(lines(chat, b"", {**chat, "id": "T-9"}))
    assert found_format == "openai-chat"
    assert found == [
        cli.ImportedExample(1, "Where is my parcel?", "It ships today."),
        cli.ImportedExample(3, "Where is my parcel?", "It ships today.", id="T-9"),
    ]


def test_prompt_completion_lines_are_read_with_their_ids() -> None:
    found_format, found = cli.parse_examples(
        [
            b"\xef\xbb\xbf" + json.dumps({"prompt": "Belt worn", "completion": "belt"}).encode(),
            *lines({"prompt": "Fan noisy", "completion": "fan", "id": 7}),
        ]
    )
    assert found_format == "prompt-completion"
    assert found == [
        cli.ImportedExample(1, "Belt worn", "belt"),
        cli.ImportedExample(2, "Fan noisy", "fan", id=7),
    ]


def test_a_file_mixing_the_formats_is_refused_naming_the_lines_of_the_other() -> None:
    chat = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    pair = {"prompt": "a", "completion": "b"}
    with pytest.raises(cli.CliError) as refused:
        cli.parse_examples(lines(chat, chat, pair, chat, pair))
    message = str(refused.value)
    assert "nothing was sent" in message
    assert "line 3 is prompt-completion, but line 1 is openai-chat" in message
    assert "line 5 is prompt-completion" in message and "line 4" not in message


@pytest.mark.parametrize(
    ("line", "said"),
    [
        (b'{"prompt": "a", "completion": ', "line 2 is not JSON (Expecting value at column 31)"),
        (b"[1, 2]", "line 2 is not a JSON object"),
        (b'{"text": "a"}', 'line 2 has neither "messages" (OpenAI chat) nor "prompt"'),
        (b'{"prompt": "a"}', 'line 2 needs "prompt" and "completion", both text'),
        (b'{"prompt": "a", "completion": "  "}', "line 2 has an empty answer"),
        (b'{"prompt": "a", "completion": "b", "id": true}', 'line 2 has an "id" that is neither'),
        (b'{"prompt": "\xff", "completion": "b"}', "line 2 is not UTF-8"),
    ],
)
def test_an_unreadable_line_refuses_the_file_with_its_number_and_no_stack_trace(
    tmp_path: Path, line: bytes, said: str
) -> None:
    path = tmp_path / "examples.jsonl"
    path.write_bytes(b'{"prompt": "a", "completion": "b"}\n' + line + b"\n")
    # Nothing listens at this address: the file is refused before any request.
    code, out, err = run_cli(
        "datasets", "import", str(path), "--objective", "x", "--url", "http://127.0.0.1:9"
    )
    assert code == 2 and out == ""
    assert said in err and "nothing was sent" in err and "Traceback" not in err


def test_chat_lines_without_an_answer_and_empty_files_are_refused() -> None:
    asked = {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]}
    with pytest.raises(cli.CliError, match="line 1 needs a user message"):
        cli.parse_examples(lines(asked))
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]}]}
    with pytest.raises(cli.CliError, match="line 1 has a user message whose content is not text"):
        cli.parse_examples(lines(parts))
    with pytest.raises(cli.CliError, match="holds no examples"):
        cli.parse_examples([b"", b"  "])


# -- where an example goes -------------------------------------------------------------------


def test_a_generation_gets_the_input_in_the_last_text_field_and_the_answer_in_its_target() -> None:
    plan = cli.ImportPlan.of(version(REPLIES))
    event = plan.event(cli.ImportedExample(4, "Where is my parcel?", "It ships today."))
    data = event["data"]
    assert data["subject"] == "" and data["body"] == "Where is my parcel?"
    assert data["resolution"] == "It ships today."
    assert data["ticket_id"].startswith("import-")
    assert (event["type"], event["objective"], event["specversion"]) == (
        "ticket.closed",
        "replies",
        "1.0",
    )
    # The same example gives the same event (ingest recognises a file sent twice); a line's
    # own id is the source id.
    again = plan.event(cli.ImportedExample(9, "Where is my parcel?", "It ships today."))
    assert again == event
    named = plan.event(cli.ImportedExample(4, "Where is my parcel?", "It ships today.", id="T-1"))
    assert named["data"]["ticket_id"] == "T-1" and named["id"] != event["id"]


def test_an_extraction_puts_each_answer_field_in_its_source_event_field() -> None:
    plan = cli.ImportPlan.of(version(REPORTS))
    answer = '{"component": "pump seal", "severity": "high", "downtime_hours": 2.5}'
    data = plan.event(cli.ImportedExample(1, "Pump 3 seal leaking", answer, id=31))["data"]
    assert data == {
        "log": "Pump 3 seal leaking",
        "component": "pump seal",
        "severity": "high",
        "downtime": 2.5,
        "entry_id": 31,
    }
    for wrong, said in (
        ("pump", "not JSON"),
        ('["pump"]', "not a JSON object"),
        ('{"component": "fan", "severity": "urgent"}', "severity is not a valid string"),
        ('{"severity": "low", "colour": "red"}', "component is missing; colour is not a field"),
    ):
        with pytest.raises(ValueError, match=said):
            plan.event(cli.ImportedExample(1, "Fan noisy", wrong))


@pytest.mark.parametrize(
    ("document", "said"),
    [
        ({**REPORTS, "task": "classification", "output": None, "labels": ["a", "b"]}, "rules"),
        ({**REPLIES, "source": {**REPLIES["source"], "target": "{a} {b}"}}, "source.target"),
        ({**REPLIES, "source": {**REPLIES["source"], "target": None}}, "source.target"),
        ({**REPLIES, "labelling": {"keep": [{"field": "csat", "min": 4}]}}, "keep rules test csat"),
        ({**REPLIES, "source": {**REPLIES["source"], "fields": {"csat": "integer"}}}, "csat"),
        ({**REPLIES, "source": {**REPLIES["source"], "target": "{body}"}}, "body are in the text"),
        (
            {**REPORTS, "output": {"fields": {"component": {}, "severity": {"source": "s"}}}},
            "component have no source event field",
        ),
    ],
)
def test_an_objective_the_examples_cannot_feed_is_refused_saying_why(
    document: dict[str, Any], said: str
) -> None:
    with pytest.raises(cli.CliError, match=said):
        cli.ImportPlan.of(version(document))


def test_a_retired_objective_takes_no_import() -> None:
    with pytest.raises(cli.CliError, match="retired"):
        cli.ImportPlan.of(version(REPLIES, status="retired"))


def test_batches_stay_within_the_count_and_the_body_limit() -> None:
    events = [(n, b"x" * 10) for n in range(7)]
    by_count = list(cli._batches(events, most=3, max_bytes=10_000))
    assert [len(batch) for batch in by_count] == [3, 3, 1]
    # "[" + 10 bytes + ("," + 10 bytes) ... + "]": three events make 34 bytes.
    by_bytes = list(cli._batches(events, most=100, max_bytes=34))
    assert [len(batch) for batch in by_bytes] == [3, 3, 1]
    assert [n for batch in by_bytes for n, _ in batch] == list(range(7))


# -- the round trip --------------------------------------------------------------------------

COUNT = 24


def _examples(seed: int) -> list[tuple[str, str]]:
    """Inputs and answers of random words (nothing a near-duplicate of another), every third
    input with an e-mail address in it."""
    rng = random.Random(seed)
    found = []
    for number in range(COUNT):
        text = " ".join(rng.sample(WORDS.split(), 12))
        if number % 3 == 0:
            text += f" reach me at customer{number}@example.com please"
        found.append((text, " ".join(rng.sample(WORDS.split(), 8))))
    return found


def test_imported_examples_come_back_redacted_in_every_export_format(
    stack: embedded.EmbeddedStack,
    api: httpx.Client,
    label_api: httpx.Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ingest, label = stack.service_urls["ingest"], stack.service_urls["label"]
    suffix = uuid.uuid4().hex[:8]
    spec = copy.deepcopy(REPLIES)
    spec["name"] = f"import-{suffix}"
    spec["source"]["event_type"] = f"ticket.import.{suffix}"
    # The first snapshot is due once every example is in; one small training run follows.
    spec["dataset"] = {"eval_fraction": 0.25, "min_examples": COUNT, "retrain_every": 1000}
    spec["training"] = {"epochs": 1, "batch_size": 16, "max_seq_len": 96, "gpu": 0}
    assert api.post("/v1/objectives", json=spec).status_code == 201
    name = spec["name"]

    pairs = _examples(seed=1901)
    path = tmp_path / "examples.jsonl"
    with path.open("w") as out:
        for number, (text, answer) in enumerate(pairs):
            line: dict[str, Any] = {
                "messages": [
                    {"role": "system", "content": "an instruction the objective replaces"},
                    {"role": "user", "content": text},
                    {"role": "assistant", "content": answer},
                ]
            }
            if number % 4 == 1:
                line["id"] = f"T-{suffix}-{number}"
            out.write(json.dumps(line) + "\n")

    # Reading the objective needs a reading role as well as producer: a producer alone is told.
    code, _, err = run_cli(
        *("datasets", "import", str(path), "--objective", name, "--url", ingest),
        *("--token", TOKENS["only-producer"]),
    )
    assert code == 2 and "403" in err and "viewer" in err and "Traceback" not in err

    args = ("datasets", "import", str(path), "--objective", name, "--url", ingest, "--json")
    code, out, err = run_cli(*args, "--token", TOKEN)
    assert code == 0, err
    assert f"sent {COUNT}/{COUNT}" in err
    summary = json.loads(out.splitlines()[-1])
    assert summary == {
        "objective": name,
        "format": "openai-chat",
        "examples": COUNT,
        "accepted": COUNT,
        "duplicates": 0,
        "refused": [],
    }
    code, out, _ = run_cli(*args, "--token", TOKEN)
    assert code == 0 and json.loads(out)["duplicates"] == COUNT, "sent again, nothing new"

    eventually(
        lambda: label_api.get(f"/v1/queue/{name}").json()["examples"],
        ready=lambda examples: examples == COUNT,
        what=f"{COUNT} examples of {name}",
        timeout_s=90,
        interval_s=0.3,
    )
    code, out, err = run_cli("datasets", "build", name, "--url", label, "--token", TOKEN)
    assert code == 0, err
    dataset_id = out.split()[0]

    expected = {(_redacted(text), answer) for text, answer in pairs}
    assert sum("<EMAIL>" in text for text, _ in expected) == COUNT // 3
    named = {f"T-{suffix}-{n}" for n in range(COUNT) if n % 4 == 1}
    # Any role that reads datasets may export them.
    exported = {}
    for file_format in ("openai-chat", "prompt-completion", "parquet"):
        folder = tmp_path / file_format
        code, out, err = run_cli(
            *("datasets", "export", dataset_id, "--objective", name, "--format", file_format),
            *("--output", str(folder), "--url", label, "--token", TOKENS["only-viewer"], "--json"),
        )
        assert code == 0, err
        exported[file_format] = json.loads(out)
        assert sum(exported[file_format]["counts"].values()) == COUNT
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["dataset_id"] == dataset_id

    code, _, err = run_cli(
        *("datasets", "export", "ds-nothing", "--objective", name, "--output", str(tmp_path)),
        *("--url", label, "--token", TOKEN),
    )
    assert code == 2 and "404" in err and not list(tmp_path.glob("train.*"))

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    import datasets

    def load(kind: str, folder: str, suffix_: str) -> Any:
        files = {
            split: str(tmp_path / folder / f"{split}.{suffix_}") for split in ("train", "eval")
        }
        return datasets.load_dataset(kind, data_files=files, cache_dir=str(tmp_path / "hf"))

    chat = load("json", "openai-chat", "jsonl")
    rows = [row for split in ("train", "eval") for row in chat[split]]
    assert all(
        [m["role"] for m in row["messages"]] == ["system", "user", "assistant"] for row in rows
    )
    assert all(row["messages"][0]["content"] == manifest["instruction"] for row in rows)
    assert {
        (row["messages"][1]["content"], row["messages"][2]["content"]) for row in rows
    } == expected

    completions = load("json", "prompt-completion", "jsonl")
    pairs_back = {
        (row["prompt"], row["completion"]) for s in ("train", "eval") for row in completions[s]
    }
    assert pairs_back == expected

    table = load("parquet", "parquet", "parquet")
    assert table["train"].num_rows == exported["parquet"]["counts"]["train"]
    parquet_rows = [row for split in ("train", "eval") for row in table[split]]
    assert {
        (row["messages"][1]["content"], row["messages"][2]["content"]) for row in parquet_rows
    } == expected
    assert named <= {row["source_id"] for row in parquet_rows}, "a line's id is its source id"


def _redacted(text: str) -> str:
    return " ".join("<EMAIL>" if "@" in word else word for word in text.split())


def test_examples_ingest_refuses_are_reported_by_line_and_the_others_are_sent(
    stack: embedded.EmbeddedStack, api: httpx.Client, tmp_path: Path
) -> None:
    suffix = uuid.uuid4().hex[:8]
    spec = copy.deepcopy(REPORTS)
    spec["name"] = f"reports-{suffix}"
    spec["source"]["event_type"] = f"maintenance.import.{suffix}"
    # Every event must carry a downtime, which only some answers hold: ingest refuses the
    # others, one by one, in a batch it would otherwise refuse whole.
    spec["source"]["fields"] = {"downtime": "number"}
    assert api.post("/v1/objectives", json=spec).status_code == 201
    path = tmp_path / "reports.jsonl"
    path.write_text(
        "\n".join(
            json.dumps({"prompt": text, "completion": json.dumps(answer)})
            for text, answer in (
                ("Valve stuck open overnight", {"component": "valve", "severity": "high"}),
                (
                    "Pump seal leaking",
                    {"component": "pump", "severity": "high", "downtime_hours": 2},
                ),
                ("Belt worn on line two", {"component": "belt", "severity": "low"}),
            )
        )
    )
    code, out, err = run_cli(
        *("datasets", "import", str(path), "--objective", spec["name"], "--json"),
        *("--url", stack.service_urls["ingest"], "--token", TOKEN),
    )
    assert code == 1, err
    summary = json.loads(out)
    assert (summary["accepted"], summary["duplicates"]) == (1, 0)
    assert [item["line"] for item in summary["refused"]] == [1, 3]
    assert all("field 'downtime' is missing" in item["reason"] for item in summary["refused"])
