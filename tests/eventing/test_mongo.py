"""Guarded view writes against the real FerretDB/MongoDB."""

import threading

from mongoengine import DictField, Document, IntField, ListField, StringField

from eventing.readside.mongo import RowChange, apply_change, insert_once, upsert_if_newer


class Row(Document):
    id = StringField(primary_key=True)
    name = StringField()
    state = StringField()
    seen = ListField(DictField())
    version = IntField()

    meta = {"collection": "guarded_rows"}


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
    # FerretDB v1 loses concurrent updates of one document; the row lock must prevent that.
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


def test_insert_once_inserts_a_key_only_once():
    assert insert_once(Row(id="e1", state="first"))
    assert not insert_once(Row(id="e1", state="second"))
    assert Row.objects.get(pk="e1").state == "first"


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
