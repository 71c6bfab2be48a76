"""incremental.plan: which files a run reads, from a listing and the state (SPEC §5, §7)."""

import copy
from datetime import UTC, datetime, timedelta

from edxorg_s3_ingest.landing.listing import LandingFile
from edxorg_s3_ingest.state.incremental import plan, preview

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def f(course: str, key: str, minutes: int, size: int = 10) -> LandingFile:
    url = f"s3://bucket/db_table/teams/prod/{course}/{key}.tsv"
    return LandingFile(T0 + timedelta(minutes=minutes), url, course, size)


def read(files: list[LandingFile], state: dict) -> list[str]:
    return [file.url for file in plan(files, state).to_read]


def test_first_run_reads_the_newest_file_of_each_course():
    old, new, other = f("c1", "aaa", 1), f("c1", "bbb", 2), f("c2", "ccc", 1)
    state: dict = {}
    work = plan([old, new, other], state)
    assert [file.url for file in work.to_read] == [new.url, other.url]
    assert work.files_seen == 3 and work.files_skipped == 1 and work.state_changed
    assert state["courses"] == {"c1": new.version, "c2": other.version}
    assert set(state["files"]) == {old.url, new.url, other.url}


def test_unchanged_listing_reads_nothing_and_leaves_state_alone():
    files = [f("c1", "aaa", 1), f("c2", "bbb", 1)]
    state: dict = {}
    plan(files, state)
    snapshot = repr(state)
    work = plan(files, state)
    assert work.to_read == [] and work.new_empty == [] and not work.state_changed
    assert repr(state) == snapshot


def test_re_export_reads_only_that_course():
    first = [f("c1", "aaa", 1), f("c2", "bbb", 1)]
    state: dict = {}
    plan(first, state)
    newer = f("c1", "zzz", 5)
    assert read([*first, newer], state) == [newer.url]
    assert state["courses"]["c1"] == newer.version


def test_late_file_older_than_its_course_current_file_changes_nothing():
    current = f("c1", "bbb", 10)
    state: dict = {}
    plan([current], state)
    late = f("c1", "zzz", 3)  # a greater key, but older: not newest
    work = plan([current, late], state)
    assert work.to_read == []
    assert state["courses"]["c1"] == current.version
    assert state["files"][late.url] == late.version


def test_late_file_is_compared_with_its_own_course_only():
    """Not a max-cursor: a file older than another course's files is still read (SPEC §9)."""
    state: dict = {}
    plan([f("c1", "aaa", 100)], state)
    late_course = f("c2", "bbb", 1)
    assert read([f("c1", "aaa", 100), late_course], state) == [late_course.url]


def test_tie_on_modification_time_takes_the_greatest_key():
    low, high = f("c1", "aaa", 7), f("c1", "fff", 7)
    assert read([high, low], {}) == [high.url]
    assert read([low, high], {}) == [high.url]


def test_zero_byte_file_is_never_newest_and_is_reported_once():
    export = f("c1", "aaa", 1)
    empty = f("c1", "0000", 9, size=0)
    state: dict = {}
    work = plan([export, empty], state)
    assert [file.url for file in work.to_read] == [export.url]
    assert [file.url for file in work.new_empty] == [empty.url]
    assert state["courses"]["c1"] == export.version
    again = plan([export, empty], state)
    assert again.to_read == [] and again.new_empty == [] and not again.state_changed


def test_zero_byte_file_arriving_after_a_load_changes_nothing():
    export = f("c1", "aaa", 1)
    state: dict = {}
    plan([export], state)
    empty = f("c1", "0000", 9, size=0)
    work = plan([export, empty], state)
    assert work.to_read == [] and [file.url for file in work.new_empty] == [empty.url]
    assert state["courses"]["c1"] == export.version


def test_course_with_only_zero_byte_files_is_not_read():
    work = plan([f("c1", "0000", 1, size=0)], {})
    assert work.to_read == [] and len(work.new_empty) == 1


def test_re_upload_of_the_current_file_reads_nothing_but_records_the_new_version():
    export = f("c1", "aaa", 1)
    state: dict = {}
    plan([export], state)
    uploaded = f("c1", "aaa", 50)  # same key and size, newer mtime
    work = plan([uploaded], state)
    assert work.to_read == [] and work.state_changed
    assert state["courses"]["c1"] == uploaded.version
    assert state["files"][uploaded.url] == uploaded.version
    assert not plan([uploaded], state).state_changed


def test_re_upload_of_an_older_file_makes_it_newest_and_it_is_read():
    old, new = f("c1", "aaa", 1), f("c1", "bbb", 2)
    state: dict = {}
    plan([old, new], state)
    bumped = f("c1", "aaa", 9)
    assert read([bumped, new], state) == [bumped.url]


def test_same_key_with_another_size_is_read_again():
    export = f("c1", "aaa", 1)
    state: dict = {}
    plan([export], state)
    grown = f("c1", "aaa", 2, size=99)
    assert read([grown], state) == [grown.url]


def test_deleted_current_file_falls_back_to_the_newest_remaining_file():
    old, new = f("c1", "aaa", 1), f("c1", "bbb", 2)
    state: dict = {}
    plan([old, new], state)
    assert read([old], state) == [old.url]
    assert state["courses"]["c1"] == old.version
    assert new.url not in state["files"]


def test_course_whose_files_all_disappeared_keeps_its_state():
    state: dict = {}
    plan([f("c1", "aaa", 1), f("c2", "bbb", 1)], state)
    work = plan([f("c2", "bbb", 1)], state)
    assert work.to_read == []
    assert "c1" in state["courses"]


def test_empty_listing_leaves_state_untouched():
    state: dict = {}
    plan([f("c1", "aaa", 1)], state)
    snapshot = repr(state)
    work = plan([], state)
    assert work.to_read == [] and work.files_seen == 0
    assert repr(state) == snapshot


def test_state_survives_json_round_trip():
    """dlt stores the state as JSON: versions must compare equal after it."""
    import json

    files = [f("c1", "aaa", 1), f("c2", "bbb", 2), f("c2", "0000", 3, size=0)]
    state: dict = {}
    plan(files, state)
    restored = json.loads(json.dumps(state))
    work = plan(files, restored)
    assert work.to_read == [] and work.new_empty == [] and not work.state_changed


def test_preview_decides_as_plan_and_leaves_the_state_alone():
    """The runner's no-op check: `preview` says what `plan` will, without touching the state;
    `changes_nothing` only when the run would read, reject and record nothing."""
    first = [f("c1", "aaa", 1), f("c2", "bbb", 1), f("c3", "ccc", 1, size=0)]
    state: dict = {}
    plan(first, state)
    cases = {
        "unchanged": first,
        "re-export": [*first, f("c1", "zzz", 5)],
        "late file": [*first, f("c2", "aaa", 0)],
        "re-upload": [f("c1", "aaa", 9), *first[1:]],
        "new empty file": [*first, f("c2", "eee", 7, size=0)],
        "file gone": first[:2],
        "nothing listed": [],
    }
    for name, files in cases.items():
        before = copy.deepcopy(state)
        seen = preview(files, state)
        assert state == before, name
        planned = plan(files, copy.deepcopy(state))
        assert (seen.to_read, seen.new_empty, seen.state_changed, seen.files_seen) == (
            planned.to_read,
            planned.new_empty,
            planned.state_changed,
            planned.files_seen,
        ), name
        assert seen.changes_nothing == (name in ("unchanged", "nothing listed")), name
