"""A lake table's data files uploaded while its load is still reading (qa, production).

A staged Parquet file is final once the load's writer closes it (staged_files.py), and the
store makes such files, as they are, its data files (iceberg_files.staged_data_file: a large
course's alone, the others joined). Uploaded only at the commit, after dlt completed its
package, they were the slowest part of the load's serial tail (a 60 MB data file: ~0.6-1.2 s
on moto, beside the footers' joining). `EarlyUploads` uploads them as they come instead, on a
thread of the load's own: each data file an S3 multipart upload, begun once PART_BYTES of it
are known, its parts sent as the load reads on; the commit sends only what is left (less than
a part) with the footer, which carries the table's field ids, known then, and completes it.
Files are grouped as the store groups them: a course's file of `alone_bytes` or more alone,
the others by columns into files of up to `joined_bytes`.

Nothing uploaded here is table data until a commit registers it, and the commit uses an
upload only for exactly the files it commits (`ready`: the same inodes, which dlt hard-links
when it takes a file as it was written, with the same sizes; columns of the table's types;
and a load that rewrites no file). Anything else is aborted and written at the commit as
before. An upload that is never completed is no object: a killed load leaves at most parts of
uncompleted multipart uploads (as boto3's managed transfer of a large file always could), which
no listing, reader or table sees, and which S3 drops once aborted (a bucket lifecycle rule,
`AbortIncompleteMultipartUpload`); a completed upload a kill or a failed commit left unused is
an orphan file, as before.
"""

import logging
import os
import struct
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, NamedTuple

import pyarrow.compute as pc
import pyarrow.parquet as pq

from edxorg_s3_ingest.landing.aws import split_s3
from edxorg_s3_ingest.stores.parquet_footer import MAGIC, TAIL, FooterJoin, columns_of, tail
from edxorg_s3_ingest.stores.s3_upload import S3Upload

log = logging.getLogger(__name__)

PART_BYTES = 8 << 20
"""Bytes of each part but the last (S3 wants 5 MiB or more). A worker holds one part at a
time: the parts of its uploads go one after the other."""


class _Member(NamedTuple):
    """A staged file in a data file being uploaded."""

    stream: BinaryIO  # open from when it was written: the writer's path is unlinked then
    inode: tuple[int, int]
    size: int
    footer_start: int
    footer: bytes
    courses: frozenset[str]


class UploadedFile:
    """One data file under way: its members' bytes after one MAGIC, one after the other;
    then, at `finish`, the footer."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.bucket, self.key = split_s3(url)
        self.members: list[_Member] = []
        self.join = FooterJoin()
        self._pending: list[bytes | tuple[BinaryIO, int, int]] = [MAGIC]
        self._pending_bytes = len(MAGIC)
        self._upload = S3Upload(self.bucket, self.key)

    @property
    def courses(self) -> set[str]:
        return set().union(*(member.courses for member in self.members))

    def add(self, member: _Member) -> None:
        self.members.append(member)
        self.join.add(member.footer_start, member.footer)
        self._pending.append((member.stream, len(MAGIC), member.footer_start))
        self._pending_bytes += member.footer_start - len(MAGIC)
        while self._pending_bytes >= PART_BYTES:
            self._upload.send_part(self._take(PART_BYTES))

    def footer(self) -> bytes:
        """The data file's footer without field ids: a single file's own, or the joined one."""
        return self.members[0].footer if len(self.members) == 1 else self.join.footer()

    def finish(self, footer: bytes) -> int:
        """Uploads what is left and `footer` (completing the upload); the file's size."""
        body = self._take(self._pending_bytes)
        body += footer + tail(footer)
        self._upload.finish(body)
        return len(MAGIC) + self.join.body_bytes + len(footer) + TAIL

    def abort(self) -> None:
        self._upload.abort()

    def _take(self, size: int) -> bytearray:
        """The next `size` pending bytes, read from the members' files into one buffer."""
        out = bytearray(size)
        view, filled = memoryview(out), 0
        while filled < size and self._pending:
            piece = self._pending[0]
            want = size - filled
            if isinstance(piece, bytes):
                taken = len(piece[:want])
                view[filled : filled + taken] = piece[:want]
                rest = piece[want:]
            else:
                stream, start, end = piece
                stream.seek(start)
                taken = stream.readinto(view[filled : filled + min(want, end - start)])
                if not taken:
                    raise OSError(f"{stream.name} ended before its footer")
                rest = (stream, start + taken, end) if start + taken < end else b""
            filled += taken
            if rest:
                self._pending[0] = rest
            else:
                self._pending.pop(0)
        view.release()
        self._pending_bytes -= filled
        del out[filled:]
        return out


class EarlyUploads:
    """The data files of one load of one table, uploaded as its staged files are written
    (`add`, from the load's main thread; the work on a thread of its own)."""

    def __init__(self, data_url: str, alone_bytes: int, joined_bytes: int) -> None:
        self.data_url = data_url.rstrip("/")
        self.alone_bytes, self.joined_bytes = alone_bytes, joined_bytes
        self._name = uuid.uuid4()
        self._files: list[UploadedFile] = []
        self._joining: dict[bytes, UploadedFile] = {}
        self._streams: list[BinaryIO] = []
        self._failed: BaseException | None = None
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="edxorg-upload")

    def add(self, path: str) -> None:
        """A staged file the writer has just closed (opened here, before anyone unlinks it)."""
        if self._failed is not None:
            return
        try:
            stream = open(path, "rb")  # noqa: SIM115 - closed by `close`
        except OSError as error:  # the commit uploads the file itself
            self._failed = error
            return
        self._streams.append(stream)
        self._pool.submit(self._add, stream)

    def name(self, number: int) -> str:
        return f"00000-{number}-{self._name}.parquet"

    def ready(
        self, staged: list[Path], usable: Callable[[Path], bool]
    ) -> tuple[list[tuple[UploadedFile, list[Path]]], list[Path]]:
        """Once every upload under way has sent its parts: the data files whose members are
        all among `staged` (by inode), unchanged and `usable`, with their staged paths; and
        the staged files left for the commit to write."""
        self._pool.shutdown(wait=True)
        if self._failed is not None:
            log.debug("early uploads not used: %s", self._failed)
            return [], staged
        by_inode = {}
        for path in staged:
            status = path.stat()
            by_inode[(status.st_dev, status.st_ino)] = (path, status.st_size)
        found, used = [], set()
        for file in self._files:
            paths = []
            for member in file.members:
                path, size = by_inode.get(member.inode, (None, None))
                if path is None or size != member.size or path in used or not usable(path):
                    break
                paths.append(path)
            else:
                found.append((file, paths))
                used.update(paths)
        return found, [path for path in staged if path not in used]

    def close(self, used: list[UploadedFile] = ()) -> None:
        """Aborts every upload but `used` (completed by the commit); closes the files."""
        self._pool.shutdown(wait=True)
        for file in self._files:
            if file not in used:
                try:
                    file.abort()
                except Exception as error:  # noqa: BLE001 - an incomplete upload is no file
                    log.debug("aborting %s: %s", file.url, error)
        self._files = []
        for stream in self._streams:
            stream.close()
        self._streams = []

    def _add(self, stream: BinaryIO) -> None:
        if self._failed is not None:
            return
        try:
            member = _member(stream)
            if member is None:
                return
            key = columns_of(member.footer)
            body = member.footer_start - len(MAGIC)
            alone = member.size >= self.alone_bytes and len(member.courses) == 1
            file = None if alone else self._joining.get(key)
            if file is not None and file.join.body_bytes + body > self.joined_bytes:
                file = None
            if file is None:
                file = UploadedFile(f"{self.data_url}/{self.name(len(self._files))}")
                self._files.append(file)
                if not alone:
                    self._joining[key] = file
            file.add(member)
        except Exception as error:  # noqa: BLE001 - the commit writes the files itself
            self._failed = error


def _member(stream: BinaryIO) -> _Member | None:
    """A staged file as a member of a data file, with the courses it holds; None if it has
    no rows."""
    status = os.fstat(stream.fileno())
    size = status.st_size
    if size < 2 * len(MAGIC) + TAIL:
        raise ValueError(f"{stream.name} is not a Parquet file")
    stream.seek(size - TAIL)
    end = stream.read(TAIL)
    if end[4:] != MAGIC:
        raise ValueError(f"{stream.name} is not a Parquet file with a plain footer")
    (length,) = struct.unpack("<I", end[:4])
    start = size - TAIL - length
    stream.seek(start)
    footer = stream.read(length)
    # A copy of the descriptor: pyarrow may close what it reads from.
    with os.fdopen(os.dup(stream.fileno()), "rb") as copy:
        parquet = pq.ParquetFile(copy)
        if not parquet.metadata.num_rows:
            return None
        column = parquet.read(columns=["_course_id"]).column(0)
    courses = frozenset(pc.unique(column).to_pylist())
    return _Member(stream, (status.st_dev, status.st_ino), size, start, footer, courses)
