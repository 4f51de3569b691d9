"""Guarded view writes against the real FerretDB/MongoDB."""

import threading

import pytest
from mongoengine import DictField, Document, IntField, ListField, StringField
from pymongo import MongoClient
from pymongo.errors import ServerSelectionTimeoutError

from eventing.readside import mongo
from eventing.readside.event_log import collection as event_log_collection
from eventing.readside.event_log import event_log_append_many
from eventing.readside.mongo import RowChange, apply_change, apply_changes
from tests.eventing.test_consumer import stock_added


class Row(Document):
    id = StringField(primary_key=True)
    name = StringField()
    state = StringField()
    seen = ListField(DictField())
    version = IntField()

    meta = {"collection": "guarded_rows"}


def upsert_if_newer(rows, change: RowChange) -> bool:
    """One change on its own, as a batch of one: True when its row changed."""
    return bool(apply_changes(rows, [change]))


def test_a_row_takes_only_newer_versions_but_always_keeps_facts_and_set_members():
    rows = Row._get_collection()
    assert upsert_if_newer(rows, RowChange("k", 2, {"state": "two"}, add_to_set={"seen": {"v": 2}}))
    # An older event still brings its facts and set members ...
    assert upsert_if_newer(
        rows, RowChange("k", 1, {"state": "one"}, facts={"name": "K"}, add_to_set={"seen": {"v": 1}})
    )
    # ... and a repeat changes nothing at all.
    assert not upsert_if_newer(rows, RowChange("k", 2, {"state": "two again"}, add_to_set={"seen": {"v": 2}}))

    row = Row.objects.get(pk="k")
    assert (row.state, row.version, row.name) == ("two", 2, "K")
    assert sorted(s["v"] for s in row.seen) == [1, 2]


def test_concurrent_writers_of_one_row_converge_to_the_newest_version_and_lose_nothing():
    # FerretDB v1 loses concurrent updates of one document; the row locks must prevent that.
    versions = list(range(1, 121))
    errors = []
    rows = Row._get_collection()

    def writer(mine: list[int]) -> None:
        try:
            for v in mine:
                upsert_if_newer(rows, RowChange("hot", v, {"state": f"s{v}"}, add_to_set={"seen": {"v": v}}))
        except Exception as exc:  # noqa: BLE001 - surfaced by the assertion below
            errors.append(exc)

    # One thread goes up, the other down, so old and new versions interleave.
    threads = [
        threading.Thread(target=writer, args=(versions[0::2],)),
        threading.Thread(target=writer, args=(versions[1::2][::-1],)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert errors == []
    row = Row.objects.get(pk="hot")
    assert (row.version, row.state) == (120, "s120")
    assert sorted(s["v"] for s in row.seen) == versions


def test_a_batch_reads_and_writes_each_touched_row_once_and_folds_its_changes_in_order():
    rows = Row._get_collection()
    rows.insert_one({"_id": "b", "state": "s1", "version": 1, "seen": []})
    changes = [
        RowChange("a", 1, {"state": "a1"}, entries={"by": {"x": {"version": 1, "n": 1}}}),
        RowChange("b", 3, {"state": "s3"}),
        RowChange("a", 2, {"state": "a2"}, entries={"by": {"x": {"version": 2, "n": 2}, "y": {"n": 9}}}),
        RowChange("b", 2, {"state": "s2"}, facts={"name": "B"}),
        RowChange("a", 1, {"state": "a1 again"}, entries={"by": {"x": {"version": 1, "n": 1}, "y": {"n": 0}}}),
    ]

    changed = apply_changes(rows, changes)

    assert set(changed) == {"a", "b"}
    assert rows.find_one({"_id": "a"}) == {
        "_id": "a",
        "state": "a2",
        "version": 2,
        "by": {"x": {"version": 2, "n": 2}, "y": {"n": 9}},  # newer entries win; unversioned, the first stays
    }
    assert (rows.find_one({"_id": "b"})["state"], rows.find_one({"_id": "b"})["name"]) == ("s3", "B")
    assert apply_changes(rows, changes) == {}  # the same batch again changes nothing


def test_the_event_log_takes_each_event_once_in_one_insert():
    first, second = stock_added("A-1"), stock_added("B-1")

    assert event_log_append_many(envelopes=[first]) == {first.id}
    assert event_log_append_many(envelopes=[first, second, first]) == {second.id}
    assert {r["_id"] for r in event_log_collection().find({})} == {first.id, second.id}


def test_the_pure_rule_and_the_live_write_agree_whatever_the_order():
    changes = [
        RowChange("r", v, {"state": f"s{v}"}, facts={"name": "R"}, add_to_set={"seen": {"v": v}}) for v in (3, 1, 2, 3)
    ]
    folded = None
    for change in changes:
        folded = apply_change(folded, change)
        upsert_if_newer(Row._get_collection(), change)

    assert Row._get_collection().find_one({"_id": "r"}) == folded
    assert (folded["state"], folded["version"], folded["name"]) == ("s3", 3, "R")
    assert sorted(s["v"] for s in folded["seen"]) == [1, 2, 3]


def test_an_entry_packed_in_a_string_is_replaced_only_by_a_newer_version_whichever_shape_is_stored():
    def entry(key: str, value: object) -> RowChange:
        return RowChange("m", 0, {}, entries={"orders": {key: value}})

    changes = [
        entry("a", "2|CONFIRMED"),
        entry("a", "1|PENDING"),  # older: stays out
        entry("a", "12|CANCELLED"),  # newer by number, not by text ("12" < "2" as strings)
        entry("b", {"version": 3, "status": "CONFIRMED"}),  # an entry as a dict (a row an earlier version wrote)
        entry("b", "2|PENDING"),
        entry("b", "4|CANCELLED"),
        entry("c", "not-a-version|x"),  # no leading version reads as 0: the first write stays
        entry("c", "0|y"),
    ]
    folded = None
    for change in changes:
        folded = apply_change(folded, change)
        upsert_if_newer(Row._get_collection(), change)

    assert folded is not None
    assert folded["orders"] == {"a": "12|CANCELLED", "b": "4|CANCELLED", "c": "not-a-version|x"}
    assert Row._get_collection().find_one({"_id": "m"}) == folded


def test_a_row_this_process_wrote_last_is_not_read_again_and_comes_back_should_the_database_lose_it():
    rows = Row._get_collection()
    assert upsert_if_newer(rows, RowChange("c", 1, {"state": "one"}, facts={"name": "C"}))
    # The database loses the row behind the writer's back (a server that restarted without its last
    # writes): the writer, which wrote the row last, does not read it again, and writes it whole.
    rows.delete_one({"_id": "c"})

    assert upsert_if_newer(rows, RowChange("c", 2, {"state": "two"}))

    assert rows.find_one({"_id": "c"}) == {"_id": "c", "name": "C", "state": "two", "version": 2}


def test_a_row_another_process_wrote_since_is_read_again(monkeypatch):
    rows = Row._get_collection()
    assert upsert_if_newer(rows, RowChange("d", 1, {"state": "one"}, add_to_set={"seen": {"v": 1}}))
    # Another process (a cache of its own) writes the row: its stamp replaces this process's.
    with monkeypatch.context() as other_process:
        other_process.setattr(mongo, "ROW_CACHE", mongo.RowCache(capacity=100))
        assert upsert_if_newer(rows, RowChange("d", 2, {"state": "two"}, add_to_set={"seen": {"v": 2}}))

    # This process's copy is stale; it must read the row, not write over the other's change.
    assert upsert_if_newer(rows, RowChange("d", 3, {"state": "three"}, add_to_set={"seen": {"v": 3}}))

    row = rows.find_one({"_id": "d"})
    assert (row["state"], [s["v"] for s in row["seen"]]) == ("three", [1, 2, 3])


def test_a_write_that_fails_leaves_its_rows_unstamped_so_every_process_reads_them_again(redis_client):
    rows = Row._get_collection()
    assert upsert_if_newer(rows, RowChange("e", 1, {"state": "one"}))
    assert redis_client.exists(mongo.stamp_key(rows, "e"))

    # The same collection through a server that does not answer: the write fails.
    unreachable = MongoClient("mongodb://127.0.0.1:1/", serverSelectionTimeoutMS=200)
    with pytest.raises(ServerSelectionTimeoutError):
        upsert_if_newer(unreachable[rows.database.name][rows.name], RowChange("e", 2, {"state": "two"}))

    assert not redis_client.exists(mongo.stamp_key(rows, "e"))
    assert mongo.ROW_CACHE.rows(rows, {"e": ""}) == {}
    assert upsert_if_newer(rows, RowChange("e", 3, {"state": "three"}))
    assert rows.find_one({"_id": "e"})["state"] == "three"


def test_a_row_assumed_new_but_stored_takes_the_changes_on_top_of_what_is_stored():
    rows = Row._get_collection()
    rows.insert_one({"_id": "f", "state": "s5", "version": 5, "name": "F", "seen": [{"v": 5}]})
    # No process wrote it lately, and the change says it creates the row: it is inserted unread, refused
    # as a duplicate, then read and changed.
    change = RowChange("f", 1, {"state": "s1"}, add_to_set={"seen": {"v": 1}}, creates=True)

    assert upsert_if_newer(rows, change)

    assert rows.find_one({"_id": "f"}) == {
        "_id": "f",
        "state": "s5",  # the stored version is newer: only the set member is added
        "version": 5,
        "name": "F",
        "seen": [{"v": 1}, {"v": 5}],
    }
    # And a new row created on the hint is a whole row.
    assert upsert_if_newer(rows, RowChange("g", 1, {"state": "s1"}, facts={"name": "G"}, creates=True))
    assert rows.find_one({"_id": "g"}) == {"_id": "g", "name": "G", "state": "s1", "version": 1}
