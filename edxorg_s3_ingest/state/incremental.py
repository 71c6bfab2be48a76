"""Which files a run reads (SPEC §5, §7), decided from one listing and the table's state
(table_state.py: held by the table's store).

The state holds every prod file's version (key, modification time, size) and, per course, the
version its rows come from. It is not a max-cursor: a late file is compared with its own course's
current file, never skipped for being older than some other course's file.
"""

from collections import defaultdict
from dataclasses import dataclass, field

from edxorg_s3_ingest.crashpoints import crashpoint
from edxorg_s3_ingest.landing.listing import LandingFile


@dataclass
class Plan:
    """What one run does for one table."""

    to_read: list[LandingFile] = field(default_factory=list)
    """The newest file of each course whose rows must be replaced, one per course."""
    new_empty: list[LandingFile] = field(default_factory=list)
    """Zero-byte files not seen before: recorded as rejected, never an export (SPEC §5)."""
    files_seen: int = 0
    state_changed: bool = False

    @property
    def files_skipped(self) -> int:
        return self.files_seen - len(self.to_read)

    @property
    def changes_nothing(self) -> bool:
        """Nothing to read or reject and the state stays as it is: a run would only list."""
        return not self.to_read and not self.new_empty and not self.state_changed


def plan(files: list[LandingFile], state: dict) -> Plan:
    """Compares a listing with the state; fills `state` with what it will be after this run.

    The caller commits the state only together with the data of `to_read` (the store saves it
    in the same commit as the rows: consolidation.py).

    Files no longer listed leave the state. A course none of whose files is listed any more keeps
    its rows (nothing says its data is gone; `--full-refresh` rebuilds without it).
    """
    result = _compare(files, state)
    if files:
        crashpoint("plan.done")
    return result


def preview(files: list[LandingFile], state: dict) -> Plan:
    """What `plan` would decide, leaving `state` as it is (a run that would change nothing is not
    started; the landing-zone sensor asks the same question).

    `plan` only adds, replaces and deletes entries of the state and of its `files` and `courses`
    dicts (their values are replaced whole, never changed in place): copies of those dicts are
    enough, and much cheaper than a deep copy of a state that lists every prod file.
    """
    return _compare(files, copied(state))


def copied(state: dict) -> dict:
    """A copy of the state that `plan` and a load can change without changing `state`: a run
    replaces values of its top-level dicts, never changes them in place."""
    return {key: dict(value) if isinstance(value, dict) else value for key, value in state.items()}


def _compare(files: list[LandingFile], state: dict) -> Plan:
    result = Plan(files_seen=len(files))
    if not files:
        return result
    seen: dict = state.setdefault("files", {})
    current: dict = state.setdefault("courses", {})
    by_course: dict[str, list[LandingFile]] = defaultdict(list)
    for file in files:
        if file.size == 0:
            if seen.get(file.url) != file.version:
                result.new_empty.append(file)
        else:
            by_course[file.course_id].append(file)
        if seen.get(file.url) != file.version:
            seen[file.url] = file.version
            result.state_changed = True
    listed = {file.url for file in files}
    for url in [url for url in seen if url not in listed]:
        del seen[url]
        result.state_changed = True
    for course_id, candidates in sorted(by_course.items()):
        newest = max(candidates)
        loaded = current.get(course_id)
        same_content = loaded is not None and loaded[0] == newest.url and loaded[2] == newest.size
        if not same_content:
            result.to_read.append(newest)
        if loaded != newest.version:
            current[course_id] = newest.version
            result.state_changed = True
    return result
