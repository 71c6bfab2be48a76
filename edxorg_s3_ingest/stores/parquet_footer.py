"""Iceberg field ids stamped into a Parquet file's footer, its data pages left as they are.

Iceberg readers find a data file's columns by field id (`field_id` of each column's schema
element in the footer). A staged file (dlt's, written by pyarrow) has none. Rather than read
and encode its rows again to get them, the footer alone is written again with the ids: it is
the file's last bytes (`<footer> <its length: 4 bytes little-endian> PAR1`), nothing in the
file points into it, and the data pages before it keep their offsets. Files that carry ids are
read the same way by every engine (Athena, Trino, pyiceberg, DuckDB), with no reliance on a
table's name mapping.

Small staged files with the same columns are joined the same way (`joined_footer`): their
row groups copied one after the other into one file, behind one footer that lists them all,
their offsets moved by where each file's bytes now start.

The footer is Thrift's compact protocol (parquet.thrift, `FileMetaData`); only what changes is
decoded: the schema elements' names (4) and field ids (9); the row count (3); each row group's
offsets (RowGroup 5, ColumnChunk 2, ColumnMetaData 9, 10, 11, 14) and ordinal (7). Every
other byte is copied as it is.
"""

import struct
from collections.abc import Iterator, Mapping
from pathlib import Path

MAGIC = b"PAR1"
TAIL = 8  # footer length (4 bytes) + MAGIC

_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY = range(9)
_LIST, _SET, _MAP, _STRUCT = 9, 10, 11, 12
_SCHEMA, _ROWS, _GROUPS = 2, 3, 4  # FileMetaData.schema, .num_rows, .row_groups
_SAME = (_SCHEMA, 5, 7)  # .schema, .key_value_metadata (Arrow's schema), .column_orders
_NAME, _CHILDREN, _FIELD_ID = 4, 5, 9  # SchemaElement.name, .num_children, .field_id
_COLUMNS, _GROUP_OFFSET, _ORDINAL = 1, 5, 7  # RowGroup.columns, .file_offset, .ordinal
_CHUNK_OFFSET, _META, _PAGE_INDEXES = 2, 3, (4, 6)  # ColumnChunk: file_offset, meta_data, ...
_META_OFFSETS = (9, 10, 11, 14)  # ColumnMetaData: data, index, dictionary pages, bloom filter


class FooterError(ValueError):
    """Not a plain (unencrypted) Parquet footer this module can read."""


def read_footer(path: Path) -> tuple[int, bytes]:
    """Where a Parquet file's footer starts, and its bytes."""
    size = path.stat().st_size
    with path.open("rb") as stream:
        stream.seek(size - TAIL)
        tail = stream.read(TAIL)
        if size < 2 * len(MAGIC) + TAIL or tail[4:] != MAGIC:
            raise FooterError(f"{path} is not a Parquet file with a plain footer")
        (length,) = struct.unpack("<I", tail[:4])
        start = size - TAIL - length
        stream.seek(start)
        return start, stream.read(length)


def with_field_ids(footer: bytes, ids: Mapping[str, int]) -> bytes:
    """The footer with each top-level column named in `ids` given that field id (any earlier
    one replaced); the other bytes as they were."""
    reader = _Reader(footer)
    for field, kind, start, end in reader.fields():
        if field != _SCHEMA:
            continue
        if kind != _LIST:
            raise FooterError("the footer's schema is not a list")
        return footer[:start] + _schema_with_ids(footer[start:end], ids) + footer[end:]
    raise FooterError("the footer has no schema")


def columns_of(footer: bytes) -> bytes:
    """What files must share to be joined (`joined_footer`): their schema, Arrow schema and
    column orders, as encoded."""
    fields = _Reader(footer).struct_fields()
    return b"".join(fields[key][1] if key in fields else b"-" for key in _SAME)


def joined_footer(parts: list[tuple[int, bytes]]) -> bytes:
    """The footer of files joined into one: each file's bytes between its leading MAGIC and
    its footer (`parts`: where each footer starts, and its bytes), one file after the other
    behind a single MAGIC. The files must have the same columns (schema, Arrow schema)."""
    join = FooterJoin()
    for start, footer in parts:
        join.add(start, footer)
    return join.footer()


class FooterJoin:
    """`joined_footer` one file at a time: each file's row groups are moved as it is added
    (while a load is still reading, for files uploaded as they are written), so that the
    joined footer itself is only assembled at the end."""

    def __init__(self) -> None:
        self._first: dict | None = None
        self._groups: list[bytes] = []
        self._rows = 0
        self.body_bytes = 0
        """The bytes of the files added so far, after the joined file's leading MAGIC."""

    def add(self, start: int, footer: bytes) -> None:
        """A file whose footer starts at `start` (its bytes after its MAGIC follow the files
        added before)."""
        fields = _Reader(footer).struct_fields()
        if self._first is None:
            self._first = fields
        elif any(fields.get(key) != self._first.get(key) for key in _SAME):
            raise FooterError("the files have different columns")
        self._rows += _Reader(fields[_ROWS][1]).signed()
        if _GROUPS in fields:
            groups = _Reader(fields[_GROUPS][1])
            count, kind = groups.list_header()
            if kind != _STRUCT:
                raise FooterError("a list of the footer does not hold structs")
            for _ in range(count):
                moved = bytearray()
                _Moving(groups, moved, self.body_bytes, len(self._groups)).struct(_ROW_GROUP)
                self._groups.append(bytes(moved))
        self.body_bytes += start - len(MAGIC)

    def footer(self) -> bytes:
        if self._first is None:
            raise FooterError("no file to join")
        fields = dict(self._first)
        fields[_ROWS] = (_I64, _varint(_zigzag(self._rows)))
        groups = self._groups
        fields[_GROUPS] = (_LIST, _list_header(len(groups), _STRUCT) + b"".join(groups))
        return _struct(fields)


_ROW_GROUP, _CHUNK, _CHUNK_META = "row group", "column chunk", "column metadata"
_OFFSETS = {
    _ROW_GROUP: {_GROUP_OFFSET},
    _CHUNK: {_CHUNK_OFFSET},
    _CHUNK_META: set(_META_OFFSETS),
}
"""The fields of each struct that hold an offset into the file."""


class _Moving:
    """A RowGroup copied from a footer with its offsets moved by `shift` and its ordinal set,
    in one pass: every field keeps its place and header (same id, same type); the values
    that change are written anew, the other bytes copied as they are."""

    def __init__(self, reader: "_Reader", out: bytearray, shift: int, ordinal: int) -> None:
        self.reader, self.out, self.shift, self.ordinal = reader, out, shift, ordinal

    def struct(self, kind: str) -> None:
        reader, out, data = self.reader, self.out, self.reader.data
        offsets, last = _OFFSETS[kind], 0
        while True:
            header_start = reader.position
            header = reader.byte()
            if header == _STOP:
                out.append(_STOP)
                return
            delta, value_type = header >> 4, header & 0x0F
            field = last + delta if delta else reader.signed()
            last = field
            out += data[header_start : reader.position]
            start = reader.position
            if field in offsets:
                offset = reader.signed()
                if offset:  # 0 is no offset: left as it is
                    out += _varint(_zigzag(offset + self.shift))
                    continue
            elif kind == _ROW_GROUP and field == _ORDINAL:
                reader.signed()
                out += _varint(_zigzag(self.ordinal))
                continue
            elif kind == _ROW_GROUP and field == _COLUMNS:
                count, element = reader.list_header()
                if element != _STRUCT:
                    raise FooterError("a list of the footer does not hold structs")
                out += data[start : reader.position]
                for _ in range(count):
                    self.struct(_CHUNK)
                continue
            elif kind == _CHUNK and field == _META:
                self.struct(_CHUNK_META)
                continue
            elif kind == _CHUNK and field in _PAGE_INDEXES:
                raise FooterError("files with page indexes cannot be joined")
            else:
                reader.skip(value_type)
            out += data[start : reader.position]


def _list_header(count: int, kind: int) -> bytes:
    return bytes([count << 4 | kind]) if count < 15 else bytes([0xF0 | kind]) + _varint(count)


def field_ids(footer: bytes) -> dict[str, int]:
    """The field id of each top-level column that has one."""
    found = {}
    for element in _elements(footer):
        if _FIELD_ID in element and _NAME in element:
            found[_Reader(element[_NAME][1]).binary().decode()] = _Reader(
                element[_FIELD_ID][1]
            ).signed()
    return found


def tail(footer: bytes) -> bytes:
    """What follows a footer at the end of the file."""
    return struct.pack("<I", len(footer)) + MAGIC


def _elements(footer: bytes) -> Iterator[dict[int, tuple[int, bytes]]]:
    reader = _Reader(footer)
    for field, _, start, end in reader.fields():
        if field == _SCHEMA:
            schema = _Reader(footer[start:end])
            count, _ = schema.list_header()
            for _ in range(count):
                yield schema.struct_fields()


def _schema_with_ids(value: bytes, ids: Mapping[str, int]) -> bytes:
    """The schema list with field ids on the root's children (flat tables: the columns)."""
    reader = _Reader(value)
    count, kind = reader.list_header()
    if kind != _STRUCT:
        raise FooterError("the footer's schema elements are not structs")
    out = bytearray(value[: reader.position])
    for index in range(count):
        fields = reader.struct_fields()
        name = _Reader(fields[_NAME][1]).binary().decode() if _NAME in fields else None
        if index and name in ids:  # element 0 is the root: no id
            if _CHILDREN in fields:
                raise FooterError(f"column {name} is nested: not supported")
            fields[_FIELD_ID] = (_I32, _varint(_zigzag(ids[name])))
        out += _struct(fields)
    return bytes(out)


def _struct(fields: dict[int, tuple[int, bytes]]) -> bytes:
    out, last = bytearray(), 0
    for field in sorted(fields):
        kind, value = fields[field]
        delta = field - last
        if 0 < delta <= 15:
            out.append(delta << 4 | kind)
        else:
            out.append(kind)
            out += _varint(_zigzag(field))
        out += value
        last = field
    out.append(_STOP)
    return bytes(out)


def _zigzag(number: int) -> int:
    return (number << 1) ^ (number >> 63)


def _varint(number: int) -> bytes:
    out = bytearray()
    while True:
        byte = number & 0x7F
        number >>= 7
        if number:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class _Reader:
    """Thrift compact protocol, read just enough to find and skip values."""

    def __init__(self, data: bytes) -> None:
        self.data, self.position = data, 0

    def byte(self) -> int:
        if self.position >= len(self.data):
            raise FooterError("the footer ends too early")
        value = self.data[self.position]
        self.position += 1
        return value

    def varint(self) -> int:
        shift = result = 0
        while True:
            byte = self.byte()
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7

    def signed(self) -> int:
        value = self.varint()
        return (value >> 1) ^ -(value & 1)

    def binary(self) -> bytes:
        length = self.varint()
        start = self.position
        self.position += length
        if self.position > len(self.data):
            raise FooterError("the footer ends too early")
        return self.data[start : self.position]

    def list_header(self) -> tuple[int, int]:
        header = self.byte()
        count, kind = header >> 4, header & 0x0F
        return (self.varint() if count == 15 else count), kind

    def fields(self) -> Iterator[tuple[int, int, int, int]]:
        """A struct's fields: (id, type, where the value starts, where it ends); a boolean's
        value is in its type (no bytes)."""
        last = 0
        while True:
            header = self.byte()
            if header == _STOP:
                return
            kind, delta = header & 0x0F, header >> 4
            field = last + delta if delta else self.signed()
            start = self.position
            self.skip(kind)
            yield field, kind, start, self.position
            last = field

    def struct_fields(self) -> dict[int, tuple[int, bytes]]:
        return {f: (kind, self.data[s:e]) for f, kind, s, e in self.fields()}

    def skip(self, kind: int) -> None:
        if kind in (_TRUE, _FALSE):
            return
        if kind == _BYTE:
            self.byte()
        elif kind in (_I16, _I32, _I64):
            self.varint()
        elif kind == _DOUBLE:
            self.position += 8
        elif kind == _BINARY:
            self.binary()
        elif kind in (_LIST, _SET):
            count, element = self.list_header()
            for _ in range(count):
                self._skip_element(element)
        elif kind == _MAP:
            count = self.varint()
            if count:
                kinds = self.byte()
                for _ in range(count):
                    self._skip_element(kinds >> 4)
                    self._skip_element(kinds & 0x0F)
        elif kind == _STRUCT:
            for _ in self.fields():
                pass
        else:
            raise FooterError(f"unknown Thrift type {kind} in the footer")

    def _skip_element(self, kind: int) -> None:
        """A list's, set's or map's element: a boolean there is one byte."""
        if kind in (_TRUE, _FALSE):
            self.byte()
        else:
            self.skip(kind)
