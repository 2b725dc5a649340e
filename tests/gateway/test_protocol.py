"""The WebSocket protocol against a real server process: frames, order, catch-up and errors."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
import websockets

from tests.support.chat import ChatClient, history, new_conversation, new_user
from tests.support.server import ServerProcess, mint_token


async def test_ready_frame_names_user_and_protocol(server: ServerProcess) -> None:
    """The first frame after connecting is `ready` with the user and protocol version 1."""
    alice = new_user(server, "alice")
    client = await ChatClient.connect(server, alice)

    assert client.ready["protocol"] == 1
    assert client.ready["user"] == {"user_id": alice.user_id, "name": "alice"}
    assert client.ready["session_id"]
    await client.close()


@pytest.mark.parametrize("via", ["header", "query"])
async def test_send_acks_sender_and_delivers_to_others(server: ServerProcess, via: str) -> None:
    """A send is acked to its connection and delivered to every other subscribed connection."""
    alice, bob = new_user(server, "alice"), new_user(server, "bob")
    conversation_id = new_conversation(server, alice, [alice, bob])
    sender = await ChatClient.connect(server, alice, via=via)
    sender_other_tab = await ChatClient.connect(server, alice, via=via)
    receiver = await ChatClient.connect(server, bob, via=via)
    for client in (sender, sender_other_tab, receiver):
        subscribed = await client.subscribe(conversation_id)
        assert subscribed["last_seq"] == 0
        assert subscribed["ref"] == "sub"

    await sender.send_message(conversation_id, "hello, world", client_msg_id="c-1", ref="r-1")

    ack = await sender.expect("ack")
    assert ack["ref"] == "r-1"
    assert ack["client_msg_id"] == "c-1"
    assert ack["message"]["seq"] == 1
    assert ack["message"]["content"] == "hello, world"
    assert ack["message"]["sender_id"] == alice.user_id
    assert ack["message"]["timestamp"].endswith("Z")
    for client in (sender_other_tab, receiver):
        delivered = await client.expect("message")
        assert delivered["message"] == ack["message"]
    for client in (sender, sender_other_tab, receiver):
        await client.close()


async def test_pipelined_sends_are_stored_and_acked_in_order(server: ServerProcess) -> None:
    """Sends from one connection, not waiting for acks, get consecutive seqs in arrival order."""
    alice, bob = new_user(server, "alice"), new_user(server, "bob")
    conversation_id = new_conversation(server, alice, [alice, bob])
    sender = await ChatClient.connect(server, alice)
    receiver = await ChatClient.connect(server, bob)
    await sender.subscribe(conversation_id)
    await receiver.subscribe(conversation_id)

    for index in range(200):
        await sender.send_message(conversation_id, f"message {index}", client_msg_id=f"m-{index}")

    acked = await sender.messages(200)
    delivered = await receiver.messages(200)
    assert [message["content"] for message in acked] == [f"message {index}" for index in range(200)]
    assert [message["seq"] for message in acked] == list(range(1, 201))
    assert [message["seq"] for message in delivered] == list(range(1, 201))
    await sender.close()
    await receiver.close()


async def test_two_senders_each_see_every_seq_once_in_order(server: ServerProcess) -> None:
    """With two senders, each connection sees seqs 1..N exactly once, acks in the place of messages."""
    alice, bob = new_user(server, "alice"), new_user(server, "bob")
    conversation_id = new_conversation(server, alice, [alice, bob])
    clients = [await ChatClient.connect(server, alice), await ChatClient.connect(server, bob)]
    for client in clients:
        await client.subscribe(conversation_id)

    async def send_many(client: ChatClient, name: str) -> None:
        for index in range(100):
            await client.send_message(conversation_id, f"{name} {index}", client_msg_id=f"{name}-{index}")

    await asyncio.gather(send_many(clients[0], "alice"), send_many(clients[1], "bob"))

    for client in clients:
        seqs = [message["seq"] for message in await client.messages(200)]
        assert seqs == list(range(1, 201))
    for client in clients:
        await client.close()


async def test_subscribe_since_seq_catches_up_without_gap_or_duplicate(server: ServerProcess) -> None:
    """`since_seq` replays stored messages first, then live ones follow with no gap or repeat."""
    alice, bob = new_user(server, "alice"), new_user(server, "bob")
    conversation_id = new_conversation(server, alice, [alice, bob])
    sender = await ChatClient.connect(server, alice)
    await sender.subscribe(conversation_id)
    for index in range(10):
        await sender.send_message(conversation_id, f"early {index}")
    await sender.messages(10)

    late = await ChatClient.connect(server, bob)
    subscribed = await late.subscribe(conversation_id, since_seq=3)
    assert subscribed["last_seq"] == 10
    for index in range(5):
        await sender.send_message(conversation_id, f"live {index}")

    received = await late.messages(12)
    assert [message["seq"] for message in received] == list(range(4, 16))
    assert received[0]["content"] == "early 3"
    assert received[-1]["content"] == "live 4"
    await sender.close()
    await late.close()


async def test_repeated_client_msg_id_acks_first_message_and_sends_nothing(server: ServerProcess) -> None:
    """The same client_msg_id again acks the first stored message; no new message goes out."""
    alice, bob = new_user(server, "alice"), new_user(server, "bob")
    conversation_id = new_conversation(server, alice, [alice, bob])
    sender = await ChatClient.connect(server, alice)
    receiver = await ChatClient.connect(server, bob)
    await sender.subscribe(conversation_id)
    await receiver.subscribe(conversation_id)

    await sender.send_message(conversation_id, "once", client_msg_id="same")
    first = await sender.expect("ack")
    await sender.send_message(conversation_id, "once again", client_msg_id="same")
    second = await sender.expect("ack")
    await sender.send_message(conversation_id, "next", client_msg_id="other")
    third = await sender.expect("ack")

    assert second["message"] == first["message"]
    assert third["message"]["seq"] == first["message"]["seq"] + 1
    delivered = await receiver.messages(2)
    assert [message["content"] for message in delivered] == ["once", "next"]
    assert len(history(server, alice, conversation_id)) == 2
    await sender.close()
    await receiver.close()


BAD_FRAMES = [
    pytest.param("not json at all", "bad_frame", id="not-json"),
    pytest.param("[1, 2]", "bad_frame", id="not-an-object"),
    pytest.param('"text"', "bad_frame", id="string"),
    pytest.param('{"type": "launch"}', "bad_frame", id="unknown-type"),
    pytest.param('{"content": "x"}', "bad_frame", id="missing-type"),
    pytest.param('{"type": "send", "conversation_id": 42, "content": "x"}', "bad_frame", id="id-not-string"),
    pytest.param('{"type": "send", "conversation_id": "not-a-uuid", "content": "x"}', "bad_frame", id="id-not-uuid"),
    pytest.param('{"type": "send", "conversation_id": "CONV", "content": 7}', "bad_frame", id="content-not-string"),
    pytest.param('{"type": "send", "conversation_id": "CONV"}', "bad_frame", id="content-missing"),
    pytest.param('{"type": "subscribe", "conversation_id": "CONV", "since_seq": "soon"}', "bad_frame", id="since-seq-text"),
    pytest.param('{"type": "subscribe", "conversation_id": "CONV", "since_seq": -1}', "bad_frame", id="since-seq-negative"),
    pytest.param('{"type": "send", "conversation_id": "CONV", "content": ""}', "invalid", id="content-empty"),
    pytest.param('{"type": "send", "conversation_id": "CONV", "content": " \\n\\t "}', "invalid", id="content-blank"),
    pytest.param('{"type": "send", "conversation_id": "CONV", "content": "' + "x" * 101 + '"}', "invalid", id="content-too-long"),
    pytest.param('{"type": "send", "conversation_id": "CONV", "content": "x", "client_msg_id": ""}', "invalid", id="client-msg-id-empty"),
    pytest.param('{"type": "send", "conversation_id": "OTHER", "content": "x"}', "not_found", id="send-invisible"),
    pytest.param('{"type": "subscribe", "conversation_id": "OTHER"}', "not_found", id="subscribe-invisible"),
    pytest.param('{"type": "typing", "conversation_id": "OTHER"}', "not_found", id="typing-invisible"),
    pytest.param('{"type": "subscribe", "conversation_id": "MISSING"}', "not_found", id="subscribe-missing"),
]


@pytest.mark.parametrize(("text", "code"), BAD_FRAMES)
async def test_bad_frame_gets_error_and_connection_keeps_working(server: ServerProcess, text: str, code: str) -> None:
    """Every bad frame is answered with an error frame of the right code; the connection stays usable."""
    alice, mallory = new_user(server, "alice"), new_user(server, "mallory")
    conversation_id = new_conversation(server, alice, [alice])
    invisible_id = new_conversation(server, mallory, [mallory])
    client = await ChatClient.connect(server, alice)
    await client.subscribe(conversation_id)
    frame = text.replace("CONV", conversation_id).replace("OTHER", invisible_id).replace("MISSING", str(uuid.uuid4()))

    await client.send(frame)
    error = await client.expect("error")
    assert error["code"] == code
    assert error["detail"]

    await client.send({"type": "ping", "ref": "still-there"})
    assert (await client.expect("pong"))["ref"] == "still-there"
    await client.send_message(conversation_id, "after the error")
    assert (await client.expect("ack"))["message"]["content"] == "after the error"
    await client.close()


@pytest.mark.parametrize(
    ("text", "named"),
    [
        pytest.param('{"type": 5}', "(got 5)", id="type-not-string"),
        pytest.param('{"type": "subscribe", "conversation_id": "CONV", "since_seq": -1}', "(got -1)", id="since-seq"),
        pytest.param('{"type": "send", "conversation_id": "not-a-uuid", "content": "x"}', "(got 'not-a-uuid')", id="uuid"),
        pytest.param(
            '{"type": "send", "conversation_id": "CONV", "content": "x", "client_msg_id": "' + "k" * 129 + '"}',
            "(got 129)",
            id="client-msg-id-length",
        ),
    ],
)
async def test_bad_frame_detail_names_value(server: ServerProcess, text: str, named: str) -> None:
    """An error detail names the rule and the value the frame sent."""
    alice = new_user(server, "alice")
    conversation_id = new_conversation(server, alice, [alice])
    client = await ChatClient.connect(server, alice)

    await client.send(text.replace("CONV", conversation_id))
    error = await client.expect("error")

    assert named in error["detail"]
    await client.close()


async def test_error_frame_carries_ref(server: ServerProcess) -> None:
    """An error answers with the ref of the frame that caused it."""
    alice = new_user(server, "alice")
    client = await ChatClient.connect(server, alice)

    await client.send({"type": "subscribe", "conversation_id": str(uuid.uuid4()), "ref": "r-404"})
    error = await client.expect("error")
    await client.send({"type": "dance", "ref": "r-unknown"})
    unknown = await client.expect("error")

    assert error["ref"] == "r-404"
    assert unknown["ref"] == "r-unknown"
    await client.close()


async def test_binary_frame_gets_bad_frame_error(server: ServerProcess) -> None:
    alice = new_user(server, "alice")
    client = await ChatClient.connect(server, alice)

    await client.connection.send(b'{"type": "ping"}')

    assert (await client.expect("error"))["code"] == "bad_frame"
    await client.close()


async def test_unsubscribe_stops_delivery(server: ServerProcess) -> None:
    alice, bob = new_user(server, "alice"), new_user(server, "bob")
    conversation_id = new_conversation(server, alice, [alice, bob])
    sender = await ChatClient.connect(server, alice)
    receiver = await ChatClient.connect(server, bob)
    await receiver.subscribe(conversation_id)

    await receiver.send({"type": "unsubscribe", "conversation_id": conversation_id, "ref": "u"})
    unsubscribed = await receiver.expect("unsubscribed")
    await sender.send_message(conversation_id, "nobody listens")
    await sender.expect("ack")
    await receiver.send({"type": "ping", "ref": "p"})

    assert unsubscribed["reason"] == "request"
    assert unsubscribed["ref"] == "u"
    assert (await receiver.recv())["type"] == "pong"
    await sender.close()
    await receiver.close()


async def test_removed_participant_subscription_ends(server: ServerProcess) -> None:
    """Removing a participant over HTTP ends its live subscription with reason `removed`."""
    alice, bob = new_user(server, "alice"), new_user(server, "bob")
    conversation_id = new_conversation(server, alice, [alice, bob])
    receiver = await ChatClient.connect(server, bob)
    await receiver.subscribe(conversation_id)

    response = httpx.delete(
        f"{server.base_url}/conversations/{conversation_id}/participants/{bob.user_id}", headers=alice.headers
    )
    unsubscribed = await receiver.expect("unsubscribed")
    await receiver.send_message(conversation_id, "still here?")
    error = await receiver.expect("error")

    assert response.status_code in (200, 204)
    assert unsubscribed["reason"] == "removed"
    assert unsubscribed["conversation_id"] == conversation_id
    assert error["code"] == "not_found"
    await receiver.close()


async def test_typing_reaches_others_but_not_sender(server: ServerProcess) -> None:
    alice, bob = new_user(server, "alice"), new_user(server, "bob")
    conversation_id = new_conversation(server, alice, [alice, bob])
    typist = await ChatClient.connect(server, alice)
    watcher = await ChatClient.connect(server, bob)
    await typist.subscribe(conversation_id)
    await watcher.subscribe(conversation_id)

    await typist.send({"type": "typing", "conversation_id": conversation_id})
    notice = await watcher.expect("typing")
    await typist.send({"type": "ping", "ref": "p"})

    assert notice == {"type": "typing", "conversation_id": conversation_id, "user_id": alice.user_id}
    assert (await typist.recv())["type"] == "pong"
    await typist.close()
    await watcher.close()


async def test_bot_post_over_http_reaches_subscribers(server: ServerProcess) -> None:
    """A message posted over HTTP goes out to live subscribers exactly like a WebSocket send."""
    alice, bot = new_user(server, "alice"), new_user(server, "bot")
    conversation_id = new_conversation(server, alice, [alice, bot])
    client = await ChatClient.connect(server, alice)
    await client.subscribe(conversation_id)

    response = httpx.post(
        f"{server.base_url}/conversations/{conversation_id}/messages",
        json={"content": "beep", "client_msg_id": "bot-1"},
        headers=bot.headers,
    )
    delivered = await client.expect("message")

    assert response.status_code == 201
    assert delivered["message"] == response.json()
    await client.close()


@pytest.mark.parametrize(
    "credential",
    [
        pytest.param(None, id="missing"),
        pytest.param("not-a-token", id="malformed"),
        pytest.param("EXPIRED", id="expired"),
        pytest.param("WRONG_KEY", id="wrongly-signed"),
    ],
)
async def test_handshake_without_valid_credentials_is_refused(server: ServerProcess, credential: str | None) -> None:
    """Without valid credentials the server closes the connection with 4401 before any frame."""
    user_id = str(uuid.uuid4())
    if credential == "EXPIRED":
        credential = mint_token(user_id, email="late@example.com", name="late", ttl=-60)
    elif credential == "WRONG_KEY":
        import jwt as pyjwt

        credential = pyjwt.encode({"sub": user_id, "exp": 2**31}, "another-secret-of-enough-length-0123456789", algorithm="HS256")
    url = server.ws_url if credential is None else f"{server.ws_url}?token={credential}"

    async with websockets.connect(url) as connection:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(connection.recv(), 10)

    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 4401


async def test_oversized_frame_closes_with_1009_and_is_logged(server: ServerProcess) -> None:
    """A frame above CORTEX_MAX_FRAME_BYTES closes that connection with 1009; others carry on."""
    alice = new_user(server, "alice")
    conversation_id = new_conversation(server, alice, [alice])
    big = await ChatClient.connect(server, alice)
    bystander = await ChatClient.connect(server, alice)

    await big.send({"type": "send", "conversation_id": conversation_id, "content": "x" * 5000})
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await big.recv()
    await bystander.send({"type": "ping", "ref": "ok"})

    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009
    assert (await bystander.expect("pong"))["ref"] == "ok"
    await bystander.close()
    await asyncio.sleep(0.2)
    assert "closed with 1009" in server.log()


async def test_query_token_never_reaches_the_log(server: ServerProcess) -> None:
    alice = new_user(server, "alice")
    client = await ChatClient.connect(server, alice, via="query")
    await client.close()
    await asyncio.sleep(0.2)

    assert alice.token not in server.log()
    assert "/ws" in server.log()


async def test_history_matches_live_delivery(server: ServerProcess) -> None:
    alice, bob = new_user(server, "alice"), new_user(server, "bob")
    conversation_id = new_conversation(server, alice, [alice, bob])
    sender = await ChatClient.connect(server, alice)
    receiver = await ChatClient.connect(server, bob)
    await receiver.subscribe(conversation_id)
    texts = ["שלום עולם", "مرحبا", "你好，世界", "こんにちは", "สวัสดี", "emoji 🎉 ok"]

    for text in texts:
        await sender.send_message(conversation_id, text)
    delivered = await receiver.messages(len(texts))

    assert [message["content"] for message in delivered] == texts
    assert history(server, bob, conversation_id) == delivered
    await sender.close()
    await receiver.close()


async def test_subscribe_twice_answers_subscribed_again(server: ServerProcess) -> None:
    alice = new_user(server, "alice")
    conversation_id = new_conversation(server, alice, [alice])
    client = await ChatClient.connect(server, alice)
    await client.subscribe(conversation_id)
    await client.send_message(conversation_id, "one")
    await client.expect("ack")

    again = await client.subscribe(conversation_id)
    await client.send_message(conversation_id, "two")
    ack = await client.expect("ack")

    assert again["last_seq"] == 1
    assert ack["message"]["seq"] == 2
    await client.close()


async def test_delivery_after_idle_writer_ends(server: ServerProcess) -> None:
    """A connection idle long enough to lose its writer task still gets acks and messages, in order."""
    from realtime.gateway.hub import WRITER_IDLE_CHECK_SECONDS

    alice, bob = new_user(server, "alice"), new_user(server, "bob")
    conversation_id = new_conversation(server, alice, [alice, bob])
    sender = await ChatClient.connect(server, alice)
    receiver = await ChatClient.connect(server, bob)
    await sender.subscribe(conversation_id)
    await receiver.subscribe(conversation_id)

    for round_index in range(2):
        # Two check intervals and a margin: the first check only clears the activity flag.
        await asyncio.sleep(2 * WRITER_IDLE_CHECK_SECONDS + 0.5)
        for index in range(3):
            content = f"round {round_index} message {index}"
            await sender.send_message(conversation_id, content, client_msg_id=f"i-{round_index}-{index}")
        acked = await sender.messages(3)
        delivered = await receiver.messages(3)
        expected = [f"round {round_index} message {index}" for index in range(3)]
        assert [message["content"] for message in acked] == expected
        assert [message["content"] for message in delivered] == expected
    await sender.close()
    await receiver.close()
