"""Replay the chatterbot-corpus dialogues against a running server and check every delivery.

Three users register over HTTP. For every corpus file the first one creates a conversation with
all three as participants. The lines of each dialogue are sent alternately from the first and
second user's WebSocket connections, each send waiting for its ack, while the third user's
connection is subscribed to the conversation. The check passes when the third user receives every
line in order with byte-identical content, and history over HTTP returns the same lines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import yaml
from tqdm import tqdm
from websockets.asyncio.client import ClientConnection, connect

logger = logging.getLogger(__name__)

# Seconds to wait for an ack, a subscription reply, or the last delivery of a conversation.
REPLY_TIMEOUT_SECONDS = 15.0
HISTORY_PAGE_SIZE = 200


@dataclass
class DemoOptions:
    url: str = "http://127.0.0.1:8000"
    languages: list[str] | None = None
    limit_dialogues: int | None = None
    # Conversations replayed at the same time.
    concurrency: int = 4
    progress: bool = True


@dataclass
class CorpusFile:
    language: str
    name: str
    dialogues: list[list[str]]

    @property
    def line_count(self) -> int:
        return sum(len(dialogue) for dialogue in self.dialogues)


@dataclass
class DemoReport:
    conversations: int = 0
    messages: int = 0
    mismatches: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def add_problem(self, text: str) -> None:
        self.mismatches += 1
        if len(self.problems) < 20:
            self.problems.append(text)


class DemoError(Exception):
    """The demo could not run (server unreachable, registration closed, a request failed)."""


# --- corpus ---


def corpus_directory() -> Path:
    import chatterbot_corpus

    return Path(chatterbot_corpus.__file__).parent / "data"


def available_languages() -> list[str]:
    return sorted(path.name for path in corpus_directory().iterdir() if path.is_dir())


def load_corpus(languages: list[str] | None, limit_dialogues: int | None) -> list[CorpusFile]:
    """Read the corpus files of ``languages`` (all when None), keeping at most ``limit_dialogues`` per file.

    YAML turns some lines into numbers or booleans; they are sent as their text. Blank lines are
    skipped, because the server rejects blank content.
    """
    known = available_languages()
    chosen = languages or known
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise DemoError(f"unknown corpus language(s) {', '.join(unknown)}; available: {', '.join(known)}")

    files = []
    for language in chosen:
        for path in sorted((corpus_directory() / language).glob("*.yml")):
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            dialogues = []
            for raw_dialogue in document.get("conversations") or []:
                lines = [str(line) for line in raw_dialogue or [] if line is not None and str(line).strip()]
                if lines:
                    dialogues.append(lines)
            if limit_dialogues is not None:
                dialogues = dialogues[:limit_dialogues]
            if dialogues:
                files.append(CorpusFile(language=language, name=path.stem, dialogues=dialogues))
    return files


# --- WebSocket client ---


class DemoConnection:
    """One user's WebSocket connection: a reader task routes acks to their senders and collects messages."""

    def __init__(self, websocket: ClientConnection, label: str) -> None:
        self._websocket = websocket
        self.label = label
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.received: dict[str, list[dict[str, Any]]] = {}
        self._arrival = asyncio.Condition()
        self._reader = asyncio.create_task(self._read(), name=f"demo-reader-{label}")

    @classmethod
    async def open(cls, ws_url: str, token: str, label: str) -> DemoConnection:
        websocket = await connect(
            ws_url, additional_headers={"Authorization": f"Bearer {token}"}, max_size=None, open_timeout=REPLY_TIMEOUT_SECONDS
        )
        first = json.loads(await asyncio.wait_for(websocket.recv(), REPLY_TIMEOUT_SECONDS))
        if first.get("type") != "ready":
            await websocket.close()
            raise DemoError(f"{label}: expected a ready frame first, got {first.get('type')!r}")
        return cls(websocket, label)

    async def _read(self) -> None:
        async for text in self._websocket:
            frame = json.loads(text)
            kind = frame.get("type")
            ref = frame.get("ref")
            if kind in ("ack", "subscribed", "unsubscribed", "pong", "error") and ref in self._pending:
                future = self._pending.pop(ref)
                if not future.done():
                    future.set_result(frame)
            elif kind == "message":
                message = frame["message"]
                async with self._arrival:
                    self.received.setdefault(message["conversation_id"], []).append(message)
                    self._arrival.notify_all()

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send a frame with a fresh ``ref`` and return the server's reply to it."""
        ref = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ref] = future
        await self._websocket.send(json.dumps({**frame, "ref": ref}, ensure_ascii=False))
        try:
            reply = await asyncio.wait_for(future, REPLY_TIMEOUT_SECONDS)
        except TimeoutError:
            self._pending.pop(ref, None)
            raise DemoError(f"{self.label}: {frame['type']} frame timed out: no reply within {REPLY_TIMEOUT_SECONDS:g} s") from None
        if reply.get("type") == "error":
            raise DemoError(f"{self.label}: {frame['type']} failed: {reply.get('code')}: {reply.get('detail')}")
        return reply

    async def wait_for_messages(self, conversation_id: str, count: int) -> list[dict[str, Any]]:
        """Wait until ``count`` messages of a conversation arrived, or the reply timeout passes."""
        async with self._arrival:
            try:
                await asyncio.wait_for(
                    self._arrival.wait_for(lambda: len(self.received.get(conversation_id, [])) >= count),
                    REPLY_TIMEOUT_SECONDS,
                )
            except TimeoutError:
                pass
            return list(self.received.get(conversation_id, []))

    async def close(self) -> None:
        await self._websocket.close()
        self._reader.cancel()
        try:
            await self._reader
        except (asyncio.CancelledError, Exception):
            pass


# --- HTTP ---


def websocket_url(base_url: str) -> str:
    parts = urlsplit(base_url)
    scheme = "wss" if parts.scheme == "https" else "ws"
    return urlunsplit((scheme, parts.netloc, parts.path.rstrip("/") + "/ws", "", ""))


async def _call(client: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> Any:
    try:
        response = await client.request(method, path, **kwargs)
    except httpx.HTTPError as error:
        raise DemoError(f"{method} {path} failed: {error!r}") from error
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:200]
        raise DemoError(f"{method} {path} failed with status {response.status_code}: {detail}")
    return response.json() if response.content else None


async def _register(client: httpx.AsyncClient, run_id: str, role: str) -> dict[str, Any]:
    body = {
        "email": f"demo-{run_id}-{role}@example.com",
        "name": f"Demo {role.capitalize()}",
        "password": secrets.token_urlsafe(16),
    }
    return await _call(client, "POST", "/auth/register", json=body)


async def _history(client: httpx.AsyncClient, token: str, conversation_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    after_seq = 0
    while True:
        page = await _call(
            client,
            "GET",
            f"/conversations/{conversation_id}/messages",
            params={"after_seq": after_seq, "limit": HISTORY_PAGE_SIZE},
            headers={"Authorization": f"Bearer {token}"},
        )
        items.extend(page["items"])
        if not page["has_more"] or not page["items"]:
            return items
        after_seq = page["items"][-1]["seq"]


# --- the replay ---


def _compare(report: DemoReport, where: str, expected: list[str], received: list[dict[str, Any]]) -> None:
    contents = [message["content"] for message in received]
    for index, line in enumerate(expected):
        if index >= len(contents):
            report.add_problem(f"{where}: {len(expected) - index} of {len(expected)} messages missing")
            return
        if contents[index] != line:
            report.add_problem(f"{where}: message {index + 1} differs from the line sent")
    if len(contents) > len(expected):
        report.add_problem(f"{where}: {len(contents) - len(expected)} unexpected extra messages")
    seqs = [message["seq"] for message in received]
    if seqs != sorted(seqs) or len(set(seqs)) != len(seqs):
        report.add_problem(f"{where}: messages not in ascending seq order")


async def _replay_file(
    corpus_file: CorpusFile,
    client: httpx.AsyncClient,
    owner_token: str,
    workspace_id: str,
    participant_ids: list[str],
    senders: list[DemoConnection],
    listener: DemoConnection,
    report: DemoReport,
    bar: tqdm,
) -> None:
    conversation = await _call(
        client,
        "POST",
        f"/workspaces/{workspace_id}/conversations",
        json={"topic": f"{corpus_file.language}/{corpus_file.name}", "participant_ids": participant_ids},
        headers={"Authorization": f"Bearer {owner_token}"},
    )
    conversation_id = conversation["id"]
    await listener.request({"type": "subscribe", "conversation_id": conversation_id})

    sent: list[str] = []
    for dialogue_index, dialogue in enumerate(corpus_file.dialogues):
        for line_index, line in enumerate(dialogue):
            sender = senders[line_index % 2]
            ack = await sender.request(
                {
                    "type": "send",
                    "conversation_id": conversation_id,
                    "content": line,
                    # Idempotency keys are unique per sender across all conversations.
                    "client_msg_id": f"{conversation_id}:{dialogue_index}:{line_index}",
                }
            )
            if ack["message"]["content"] != line:
                report.add_problem(f"{corpus_file.language}/{corpus_file.name}: ack content differs from the line sent")
            sent.append(line)
            bar.update(1)

    where = f"{corpus_file.language}/{corpus_file.name}"
    received = await listener.wait_for_messages(conversation_id, len(sent))
    _compare(report, f"{where} (live)", sent, received)
    history = await _history(client, owner_token, conversation_id)
    _compare(report, f"{where} (history)", sent, history)

    await listener.request({"type": "unsubscribe", "conversation_id": conversation_id})
    report.conversations += 1
    report.messages += len(sent)


async def replay(options: DemoOptions) -> DemoReport:
    """Run the replay and return its report; raise DemoError when it cannot run."""
    if options.limit_dialogues is not None and options.limit_dialogues < 1:
        raise DemoError(f"--limit-dialogues must be at least 1 (got {options.limit_dialogues})")
    if options.concurrency < 1:
        raise DemoError(f"--concurrency must be at least 1 (got {options.concurrency})")
    corpus = load_corpus(options.languages, options.limit_dialogues)
    run_id = secrets.token_hex(4)
    report = DemoReport()

    async with httpx.AsyncClient(base_url=options.url, timeout=REPLY_TIMEOUT_SECONDS) as client:
        users = [await _register(client, run_id, role) for role in ("alice", "bob", "carol")]
        tokens = [user["access_token"] for user in users]
        participant_ids = [user["user"]["user_id"] for user in users]
        workspace = await _call(
            client,
            "POST",
            "/workspaces",
            json={"name": f"Corpus replay {run_id}", "description": "Dialogues of the chatterbot-corpus package"},
            headers={"Authorization": f"Bearer {tokens[0]}"},
        )

        ws_url = websocket_url(options.url)
        connections = [
            await DemoConnection.open(ws_url, token, label) for token, label in zip(tokens, ("alice", "bob", "carol"))
        ]
        started = time.perf_counter()
        try:
            with tqdm(
                total=sum(item.line_count for item in corpus), unit="msg", disable=not options.progress
            ) as bar:
                # Several corpus files replay at once over the same three connections. Within
                # one conversation every send still waits for the previous ack.
                slots = asyncio.Semaphore(options.concurrency)

                async def replay_one(corpus_file: CorpusFile) -> None:
                    async with slots:
                        await _replay_file(
                            corpus_file,
                            client,
                            tokens[0],
                            workspace["id"],
                            participant_ids,
                            connections[:2],
                            connections[2],
                            report,
                            bar,
                        )

                await asyncio.gather(*(replay_one(corpus_file) for corpus_file in corpus))
        finally:
            report.seconds = time.perf_counter() - started
            for connection in connections:
                await connection.close()
    return report


def print_summary(report: DemoReport) -> None:
    rate = report.messages / report.seconds if report.seconds > 0 else 0.0
    print(
        f"conversations: {report.conversations}  messages: {report.messages}  "
        f"mismatches: {report.mismatches}  time: {report.seconds:.1f} s  messages per second: {rate:.0f}"
    )
    for problem in report.problems:
        print(f"mismatch: {problem}")


async def run_demo(options: DemoOptions) -> int:
    """Run the replay and print its summary; return 0 when everything matched, else 1."""
    try:
        report = await replay(options)
    except DemoError as error:
        print(f"error: {error}")
        return 1
    print_summary(report)
    return 1 if report.mismatches else 0
