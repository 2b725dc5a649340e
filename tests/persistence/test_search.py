"""Full-text search: words only, any script, only visible conversations."""

from __future__ import annotations

import string
import uuid

import pytest
from alembic import command
from sqlalchemy import text, true

from persistence.database import alembic_config
from persistence.errors import NotFoundError
from persistence.models import NewMessage
from persistence.repositories.messages import MESSAGE_COLUMNS
from persistence.search import (
    SQL_PUNCTUATION_CLASS,
    postgresql_search,
    split_words,
    sqlite_search,
)
from tests.persistence.conftest import create_conversation, create_user

TEXTS = {
    "english": "The quick brown fox jumps over the lazy dog",
    "chinese": "我们明天在北京见面吧",
    "japanese": "東京タワーに行きました",
    "thai": "ฉันชอบกินข้าวผัดมาก",
    "arabic": "مرحبا بالعالم الجميل",
    "hebrew": "שלום עולם יפה",
    "korean": "서울에서 만나요",
}


@pytest.fixture(autouse=True, params=["scan", "index"])
def sqlite_plan(request, db, monkeypatch):
    """Run each search test with both SQLite plans: reading the scope, and led by FTS5."""
    if db.dialect != "sqlite" and request.param == "index":
        pytest.skip("PostgreSQL has one plan")
    if request.param == "index":
        monkeypatch.setattr("persistence.repositories.messages.SEARCH_SCAN_MAX_MESSAGES", -1)
    return request.param


@pytest.fixture
async def stored(db, world):
    """Store every text of TEXTS in the world's conversation; return id by key."""
    async with db.unit_of_work() as uow:
        results = await uow.messages.append_batch(
            [
                NewMessage(conversation_id=world.conversation.id, sender_id=world.member.user_id, content=text)
                for text in TEXTS.values()
            ]
        )
    return {key: result.message.id for key, result in zip(TEXTS, results)}


async def store(db, world, content: str) -> uuid.UUID:
    """Store one message from the world's member; return its id."""
    async with db.unit_of_work() as uow:
        result = await uow.messages.append(
            NewMessage(conversation_id=world.conversation.id, sender_id=world.member.user_id, content=content)
        )
    return result.message.id


async def search(db, actor, query, **options):
    async with db.unit_of_work() as uow:
        return [message.id for message in await uow.messages.search(actor.user_id, query, **options)]


@pytest.mark.parametrize(
    ("query", "key"),
    [
        ("fox", "english"),
        ("QUICK lazy", "english"),
        ("北京", "chinese"),
        ("明天在北京", "chinese"),
        ("東京", "japanese"),
        ("タワー", "japanese"),
        ("ข้าวผัด", "thai"),
        ("بالعالم", "arabic"),
        ("עולם", "hebrew"),
        ("서울", "korean"),
    ],
    ids=["word", "two-words-any-case", "zh-2", "zh-5", "ja-kanji", "ja-katakana", "th", "ar", "he", "ko"],
)
async def test_search_finds_word_in_each_script(db, world, stored, query, key):
    """A word from each script finds its message and nothing else."""
    assert await search(db, world.member, query) == [stored[key]]


async def test_search_requires_every_word(db, world, stored):
    assert await search(db, world.member, "fox 北京") == []


@pytest.mark.parametrize(
    "query",
    ['foo AND (', '"', 'NEAR(', 'fox"', "fox*", "a OR b", "^fox", "{content}: fox", "-fox", "   ", "()"],
)
async def test_search_syntax_is_never_parsed(db, world, stored, query):
    """Query-language characters are plain text: a result or nothing, never an error."""
    found = await search(db, world.member, query)
    assert isinstance(found, list)


async def test_search_quote_inside_word_matches_literally(db, world):
    stored_id = await store(db, world, 'she said "hello" twice')
    assert await search(db, world.member, '"hello"') == [stored_id]


async def test_search_limited_to_visible_conversations(db, world, stored):
    """An outsider finds nothing; the workspace owner finds what participants find."""
    assert await search(db, world.outsider, "fox") == []
    assert await search(db, world.owner, "fox") == [stored["english"]]

    private = await create_conversation(db, world.owner, world.workspace, [world.owner], "private")
    async with db.unit_of_work() as uow:
        await uow.messages.append(
            NewMessage(conversation_id=private.id, sender_id=world.owner.user_id, content="secret fox")
        )
    assert await search(db, world.member, "fox") == [stored["english"]]
    assert len(await search(db, world.owner, "fox")) == 2


async def test_search_in_one_conversation(db, world, stored):
    assert await search(db, world.member, "fox", conversation_id=world.conversation.id) == [stored["english"]]
    with pytest.raises(NotFoundError):
        await search(db, world.outsider, "fox", conversation_id=world.conversation.id)
    with pytest.raises(NotFoundError):
        await search(db, world.member, "fox", conversation_id=uuid.uuid4())


async def test_search_follows_updates_and_deletes(db, world, stored):
    """The index follows content changes and deleted messages (SQLite: triggers)."""
    async with db.engine.begin() as connection:
        await connection.exec_driver_sql(
            "UPDATE messages SET content = 'a slow green turtle' WHERE content LIKE '%fox%'"
        )
    assert await search(db, world.member, "fox") == []
    assert await search(db, world.member, "turtle") == [stored["english"]]

    async with db.engine.begin() as connection:
        await connection.exec_driver_sql("DELETE FROM messages WHERE content LIKE '%turtle%'")
    assert await search(db, world.member, "turtle") == []


async def test_search_index_emptied_by_cascade(db, world, stored):
    """Messages removed by a cascading delete leave the search index."""
    async with db.unit_of_work() as uow:
        await uow.workspaces.delete(world.owner.user_id, world.workspace.id)
    if db.dialect == "sqlite":
        async with db.engine.connect() as connection:
            rows = await connection.exec_driver_sql(
                "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH '\"fox\"'"
            )
            assert rows.scalar() == 0


async def test_search_newest_first_and_limit(db, world):
    async with db.unit_of_work() as uow:
        results = await uow.messages.append_batch(
            [
                NewMessage(conversation_id=world.conversation.id, sender_id=world.member.user_id, content=f"report {n}")
                for n in range(5)
            ]
        )
    found = await search(db, world.member, "report", limit=3)
    assert found == [result.message.id for result in reversed(results)][:3]


async def test_search_short_latin_word(db, world, stored):
    """A short word is a word like any other: whole words only, on both databases."""
    assert await search(db, world.member, "ox") == []
    stored_id = await store(db, world, "it is on the way")
    assert await search(db, world.member, "is") == [stored_id]
    other = await create_user(db, "Other")
    assert await search(db, other, "is") == []


@pytest.mark.parametrize(
    ("content", "query", "found"),
    [
        ("the quarterly report is late", "port", False),
        ("the quarterly report is late", "REPORT", True),
        ("send me an e-mail today", "e-mail", True),
        ("send me an e-mail today", "mail", True),
        ("send me an e mail today", "e-mail", True),
        ("write to alice@example.com please", "alice", True),
        ("write to alice@example.com please", "example", True),
        ("see https://example.org/docs/page now", "docs", True),
        ("edit main.py first", "py", True),
        ("pay $12.50 now", "12", True),
        ("Straße closed", "STRASSE", False),
        ("the STRASSE sign", "straße", False),
        ("Straße closed", "STRASSE straße", False),
        ("die STRASSE", "Strasse", True),
        ("una cafetería", "cafe", False),
        ("un café", "cafe", False),
        ("un café", "CAFÉ", True),
        ("snake_case_name here", "case", True),
        ("我们明天在北京见面吧 and then home", "北京 home", True),
    ],
)
async def test_search_matches_whole_words_outside_no_space_scripts(db, world, content, query, found):
    """Spaced scripts match whole words ignoring case; no-space scripts match inside the text."""
    stored_id = await store(db, world, content)
    assert await search(db, world.member, query) == ([stored_id] if found else [])


async def test_search_trigram_index_holds_only_no_space_scripts(db, world, stored):
    """SQLite puts a message in the trigram index only when it contains such a script."""
    if db.dialect != "sqlite":
        pytest.skip("the trigram FTS5 table is SQLite's")
    async with db.engine.connect() as connection:
        # An external-content table reads its rows from messages; its docsize table has one row
        # per message it indexed.
        rows = await connection.exec_driver_sql("SELECT count(*) FROM messages_trigram_fts_docsize")
        indexed = rows.scalar()
    # chinese, japanese, thai and korean, not english, arabic or hebrew.
    assert indexed == 4


@pytest.mark.parametrize(
    ("query", "sqlite_index", "postgresql_index"),
    [
        ("quick fox", "messages_fts", "ix_messages_content_fts"),
        ("东京塔", "messages_trigram_fts", "ix_messages_content_trgm"),
    ],
)
async def test_search_served_by_an_index(db, query, sqlite_index, postgresql_index):
    """The search can use the full-text indexes on each database."""
    words = split_words(query)
    if db.dialect == "postgresql":
        statement = postgresql_search(MESSAGE_COLUMNS, words, true(), limit=50)
    else:
        statement = sqlite_search(MESSAGE_COLUMNS, words, true(), scan=False, limit=50)
    async with db.engine.connect() as connection:
        sql = str(statement.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True}))
        if db.dialect == "postgresql":
            # On a near-empty table the planner prefers a scan; this shows the index is usable.
            await connection.exec_driver_sql("SET enable_seqscan = off")
            explain = "EXPLAIN "
        else:
            explain = "EXPLAIN QUERY PLAN "
        rows = await connection.exec_driver_sql(explain + sql)
        plan = " ".join(str(row[-1]) for row in rows)

    if db.dialect == "postgresql":
        assert postgresql_index in plan
    else:
        assert f"{sqlite_index} VIRTUAL TABLE INDEX" in plan
        # FTS5 returns matches newest first itself, so the search stops at the limit.
        assert "TEMP B-TREE" not in plan


async def test_search_ignores_case_beyond_ascii(db, world):
    """Upper-case non-ASCII letters find their lower-case forms."""
    stored_id = await store(db, world, "Notre école ouvre à Paris")
    assert await search(db, world.member, "ÉCOLE") == [stored_id]
    assert await search(db, world.member, "À") == [stored_id]


async def test_search_after_upgrade_from_the_first_schema(db, world):
    """Messages stored under the first schema's trigram index are found after the upgrade."""
    async with db.engine.begin() as connection:
        await connection.run_sync(lambda sync: command.downgrade(alembic_config(sync), "0001"))
    english = await store(db, world, "the quarterly report")
    chinese = await store(db, world, "我们明天在北京见面吧")
    async with db.engine.begin() as connection:
        await connection.run_sync(lambda sync: command.upgrade(alembic_config(sync), "head"))

    assert await search(db, world.member, "REPORT") == [english]
    assert await search(db, world.member, "port") == []
    assert await search(db, world.member, "北京见面") == [chinese]
    assert await search(db, world.member, "北京") == [chinese]


async def test_postgresql_word_index_expression(db):
    """The word index's expression replaces the ASCII marks and nothing else, and has no pending list."""
    if db.dialect != "postgresql":
        pytest.skip("the expression index is PostgreSQL's")
    sample = string.punctuation + " aé¡—x_1 «ok»"
    async with db.engine.connect() as connection:
        replaced = await connection.scalar(
            text(f"SELECT regexp_replace(:sample, {SQL_PUNCTUATION_CLASS}, ' ', 'g')"), {"sample": sample}
        )
        definition, options = (
            await connection.execute(
                text(
                    "SELECT pg_get_indexdef(c.oid), c.reloptions FROM pg_class AS c "
                    "WHERE c.relname = 'ix_messages_content_fts' AND c.relnamespace = current_schema()::regnamespace"
                )
            )
        ).one()
    assert replaced == sample.translate(str.maketrans(string.punctuation, " " * len(string.punctuation)))
    assert "regexp_replace" in definition
    assert options == ["fastupdate=off"]
