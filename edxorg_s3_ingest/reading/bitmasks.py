"""A buffer's byte classes as bit masks, 64 bytes to a word: the reader's scans in a few numpy
passes over words, instead of Python's regex engine stepping through every quote or a list of
every backslash's position.

Bit `i % 64` of word `i // 64` stands for byte `i` (little-endian, whatever the machine). Every
mask has at least one bit past the buffer's last byte, always clear unless set on purpose (the
byte after a buffer, the landing place of a carry), so that no shift or carry is ever lost.
"""

import numpy as np

WORD = np.dtype("<u8")
ONE, TOP = np.uint64(1), np.uint64(63)
EVEN = np.uint64(0x5555_5555_5555_5555)
"""The bits of even byte positions (a word starts at a multiple of 64, so they are even)."""
ODD = ~EVEN


def mask(values: np.ndarray, byte: int, scratch: np.ndarray | None = None) -> np.ndarray:
    """The bytes of `values` (uint8) equal to `byte`. `scratch` (from `scratch`) holds the
    comparison, for the caller to reuse; else it is allocated."""
    hits = compared(values, byte, scratch)
    return of(hits)


def scratch(size: int) -> np.ndarray:
    """Room for the byte-by-byte comparisons of up to `size` bytes, and the spare bits."""
    return np.empty(_padded(size), bool)


def compared(values: np.ndarray, byte: int, scratch: np.ndarray | None = None) -> np.ndarray:
    """`values == byte`, padded with False to a whole number of words and a spare bit."""
    size, padded = len(values), _padded(len(values))
    hits = np.empty(padded, bool) if scratch is None else scratch[:padded]
    np.equal(values, byte, out=hits[:size])
    hits[size:] = False
    return hits


def of(hits: np.ndarray) -> np.ndarray:
    """A padded comparison (`compared`) as a mask."""
    return np.packbits(hits, bitorder="little").view(WORD)


def _padded(size: int) -> int:
    return (size // 64 + 1) * 64


def set_bit(words: np.ndarray, position: int) -> None:
    words[position >> 6] |= ONE << np.uint64(position & 63)


def bit(words: np.ndarray, position: int) -> bool:
    return bool((words[position >> 6] >> np.uint64(position & 63)) & ONE)


def shifted_up(words: np.ndarray, first: bool) -> np.ndarray:
    """Bit `i` is bit `i - 1` of `words`; bit 0 is `first` (the byte before the buffer)."""
    out = words << ONE
    out[1:] |= words[:-1] >> TOP
    out[0] |= np.uint64(first)
    return out


def shifted_down(words: np.ndarray) -> np.ndarray:
    """Bit `i` is bit `i + 1` of `words` (the last bit clear)."""
    out = words >> ONE
    out[:-1] |= words[1:] << TOP
    return out


def parity(words: np.ndarray, start: bool) -> np.ndarray:
    """Bit `i` is the parity of the bits at `0..i` of `words`, plus `start`: e.g. with quotes,
    whether byte `i` is inside a quoted field when every quote opens or closes one."""
    out = words.copy()
    for shift in (1, 2, 4, 8, 16, 32):
        out ^= out << np.uint64(shift)
    # Each word's own parity is its top bit; those before it flip all of its bits.
    flips = np.bitwise_xor.accumulate(out >> TOP)
    flips[1:] = flips[:-1]
    flips[0] = 0
    flips ^= np.uint64(start)
    out ^= np.uint64(0) - flips  # 0 or all ones
    return out


def added(words: np.ndarray, other: np.ndarray) -> np.ndarray:
    """`words + other` as two long binary numbers (word 0 the lowest), carries between words
    included: a carry ripples through a run of set bits that crosses words."""
    total = words + other
    carries = total < words
    while carries[:-1].any():
        incoming = np.zeros(len(total), WORD)
        incoming[1:] = carries[:-1]
        before = total
        total = total + incoming
        carries = total < before
    return total


def positions(words: np.ndarray) -> np.ndarray:
    """The positions of the set bits, ascending (for masks with few of them)."""
    nonzero = np.flatnonzero(words)
    if not len(nonzero):
        return nonzero
    bits = np.unpackbits(words[nonzero].view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
    rows, columns = np.nonzero(bits)
    return nonzero[rows] * 64 + columns


def last(words: np.ndarray) -> int | None:
    """The position of the highest set bit, or None."""
    nonzero = np.flatnonzero(words)
    if not len(nonzero):
        return None
    word = int(nonzero[-1])
    return word * 64 + int(words[word]).bit_length() - 1
