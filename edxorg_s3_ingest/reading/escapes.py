"""The edX export escapes (`\\\\`, `\\t`, `\\n`, `\\r`; SPEC §2) and raw CRs, for pyarrow's parse.

Two ways, both exact:

- Before parsing (`mark`, then `unmark` on the parsed columns), the fast one: pyarrow's own
  escape handling (`escape_char="\\\\"`) drops the first backslash of every `\\\\` pair while it
  parses, in C++ and on its threads. For it to be right, only pairs may be left as backslashes
  in the raw bytes: the byte after an escaping `\\` that stands for TAB, LF or CR becomes a
  stand-in byte (its backslash is then dropped by pyarrow), and a backslash that escapes
  nothing (any other sequence, which stays as written) becomes a stand-in for itself, which
  pyarrow leaves alone. Raw CRs, line ends to pyarrow, get a stand-in too. `unmark` maps the
  stand-ins back with one table lookup per chunk that holds any. Whether a backslash escapes
  the next byte is decided by the length of its run of backslashes: runs pair up from their
  start, so a run of odd length ends in an escaping backslash. The stand-ins are bytes that
  valid UTF-8 never holds (the reader parses only valid UTF-8), and none is a line end: lines
  and rows are the same as in the raw bytes.
- After parsing (`decode_columns`), for the one reading that cannot use stand-ins: the re-read
  of a segment with a ragged line, whose skipped records pyarrow hands over as text.
"""

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from edxorg_s3_ingest.reading import bitmasks

_BACKSLASH, _CR = 0x5C, 0x0D
_CR_STAND_IN = 0xFF
_LONE_BACKSLASH = 0xFA
_ESCAPED = {ord("t"): (0xFD, 0x09), ord("n"): (0xFC, 0x0A), ord("r"): (0xFB, 0x0D)}
_FIRST_STAND_IN = 0xFA
_STAND_IN_OF = np.zeros(256, np.uint8)
"""The stand-in for the byte after an escaping backslash (0: none, the backslash stays)."""
_ORIGINAL = bytearray(range(256))
"""Each byte as it is after unmarking: the stand-ins as what they stand for."""
for _letter, (_stand_in, _char) in _ESCAPED.items():
    _STAND_IN_OF[_letter] = _stand_in
    _ORIGINAL[_stand_in] = _char
_ORIGINAL[_LONE_BACKSLASH] = _BACKSLASH
_ORIGINAL[_CR_STAND_IN] = _CR
_ORIGINAL_VALUES = np.frombuffer(bytes(_ORIGINAL), np.uint8)
_RAW = bytearray(_ORIGINAL)
"""Each byte as it was before marking: the escapes' stand-ins as their letters."""
for _letter, (_stand_in, _) in _ESCAPED.items():
    _RAW[_stand_in] = _letter


def mark(segment: bytes | bytearray, backslashes: bool, crs: bool) -> bytearray:
    """The raw segment (valid UTF-8) marked for a parse with `escape_char="\\\\"`: a bytearray
    in place, bytes in a copy."""
    marked = segment if isinstance(segment, bytearray) else bytearray(segment)
    values = np.frombuffer(marked, np.uint8)
    if crs:
        values[values == _CR] = _CR_STAND_IN
    if backslashes:
        _mark_escapes(values)
    return marked


def _mark_escapes(values: np.ndarray) -> None:
    escaped = bitmasks.positions(_after_odd_runs(bitmasks.mask(values, _BACKSLASH)))
    escaping = escaped - 1
    following = np.zeros(len(escaped), np.uint8)
    inside = escaped < len(values)
    following[inside] = values[escaped[inside]]
    stand_ins = _STAND_IN_OF[following]
    escape = stand_ins != 0
    values[escaped[escape]] = stand_ins[escape]
    values[escaping[~escape]] = _LONE_BACKSLASH


def _after_odd_runs(backslashes: np.ndarray) -> np.ndarray:
    """The bytes right after a run of backslashes of odd length: the last backslash of such a
    run escapes them (runs pair up from their start). Adding a run's first bit to the mask
    carries through the run and lands just past it; a run from an even position that lands on
    an odd one has odd length, and the other way round. A segment starts after an LF, so no
    run comes from before it; one that ends it lands on the spare bit past its end."""
    starts = backslashes & ~bitmasks.shifted_up(backslashes, False)
    from_even = bitmasks.added(backslashes, starts & bitmasks.EVEN) & ~backslashes
    from_odd = bitmasks.added(backslashes, starts & bitmasks.ODD) & ~backslashes
    return (from_even & bitmasks.ODD) | (from_odd & bitmasks.EVEN)


def restore(marked: bytearray) -> None:
    """Undoes `mark` in place: every stand-in is where `mark` put it, and the bytes before it
    were left as they were (a stand-in for a letter follows its backslash)."""
    marked[:] = marked.translate(_RAW)


def unmark(columns: list[pa.ChunkedArray]) -> list[pa.ChunkedArray]:
    """The parsed binary columns of a marked segment with every stand-in as what it stands for."""
    return [
        pa.chunked_array([_unmark_chunk(chunk) for chunk in column.chunks], column.type)
        for column in columns
    ]


def _unmark_chunk(chunk: pa.Array) -> pa.Array:
    validity, offsets, data = chunk.buffers()
    if data is None or not len(data):
        return chunk
    values = np.frombuffer(data, np.uint8)
    if values.max() < _FIRST_STAND_IN:  # no stand-in: valid UTF-8 stays below 0xF5
        return chunk
    # A copy with the few stand-ins put back: ~2.5x less CPU than translating every byte.
    stand_ins = np.flatnonzero(values >= _FIRST_STAND_IN)
    restored = values.copy()
    restored[stand_ins] = _ORIGINAL_VALUES[values[stand_ins]]
    return _with_data(chunk, restored)


def decode_columns(
    columns: list[pa.ChunkedArray], cr: bytes | None, has_backslash: bool
) -> list[pa.ChunkedArray]:
    """Undoes the CR stand-in `cr` and the edX escapes in columns parsed without `mark`,
    chunk by chunk: pyarrow substring replacement (`\\\\` first, to a stand-in byte), only in
    chunks holding a `\\`, and only the passes for the escapes that chunk holds."""

    def decode(chunk: pa.Array) -> pa.Array:
        if cr and _holds(chunk, cr[0]):
            if len(cr) == 1:
                chunk = _replace_byte(chunk, cr[0], _CR)
            else:
                chunk = pc.replace_substring(chunk, cr, b"\r")
        if has_backslash and (after := _after_backslash(chunk)):
            codes = [
                (b"\\" + bytes([letter]), bytes([char]))
                for letter, (_, char) in _ESCAPED.items()
                if letter in after
            ]
            if _BACKSLASH not in after:
                for code, char in codes:
                    chunk = pc.replace_substring(chunk, code, char)
            elif not codes:
                chunk = pc.replace_substring(chunk, b"\\\\", b"\\")
            else:
                # `\\\\` first, to a stand-in, so that `\\\\n` stays backslash + n.
                chunk = pc.replace_substring(chunk, b"\\\\", bytes([_LONE_BACKSLASH]))
                for code, char in codes:
                    chunk = pc.replace_substring(chunk, code, char)
                chunk = _replace_byte(chunk, _LONE_BACKSLASH, _BACKSLASH)
        return chunk

    return [
        pa.chunked_array([decode(chunk) for chunk in column.chunks], column.type)
        for column in columns
    ]


def _after_backslash(chunk: pa.Array) -> set[int]:
    """The bytes that follow a backslash in the chunk's data. Each decoding pass is a copy of
    the chunk: only those of escapes present are run. A pass is skipped only when its two-byte
    sequence occurs nowhere, so skipping it is exact (pairing `\\\\` first never puts a
    backslash before a byte that did not follow one)."""
    data = chunk.buffers()[2]
    if data is None:
        return set()
    values = np.frombuffer(data, np.uint8)
    following = values[np.flatnonzero(values[:-1] == _BACKSLASH) + 1]
    return set(np.flatnonzero(np.bincount(following, minlength=256)).tolist())


def _replace_byte(chunk: pa.Array, old: int, new: int) -> pa.Array:
    """The chunk with every byte `old` as `new`: one numpy pass over a copy of its data."""
    values = np.frombuffer(chunk.buffers()[2], np.uint8).copy()
    values[values == old] = new
    return _with_data(chunk, values)


def _with_data(chunk: pa.Array, values: np.ndarray | bytes) -> pa.Array:
    """The chunk with another data buffer of the same length (its offsets and nulls shared)."""
    validity, offsets, _ = chunk.buffers()
    return pa.Array.from_buffers(
        chunk.type,
        len(chunk),
        [validity, offsets, pa.py_buffer(values)],
        chunk.null_count,
        chunk.offset,
    )


def _holds(chunk: pa.Array, byte: int) -> bool:
    """Whether the chunk's data buffer holds the byte (numpy: faster than match_substring)."""
    data = chunk.buffers()[2]
    return data is not None and bool((np.frombuffer(data, np.uint8) == byte).any())
