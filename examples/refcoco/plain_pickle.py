"""A restricted reader for the refer toolkit's `refs(unc).p`: pickled data that is plain containers only.

`refs(unc).p` (lichengunc/refer) is a Python 2 cPickle of a list of dicts of str / int / list. The
standard way to load it, the pickle module's Unpickler, executes whatever the file names (a class
to build, a function to call): loading a pickle from the internet is running code from it. This
project never uses the pickle module. This reader instead interprets the pickle *opcodes* itself
and accepts only those that build plain values: None, bool, int, float, str, bytes, list, tuple,
dict, set, and the memo that shares them. Any opcode that would look up a global, call, build an
object or use a persistent id is refused with the opcode's name and byte offset, so nothing in the
file can run. Protocols 0-5 (what Python 2 and 3 write for such data) are covered.

Python 2 `str` values (opcodes STRING / BINSTRING / SHORT_BINSTRING) are bytes; they are decoded
as UTF-8, or as Latin-1 where they are not valid UTF-8 (never an error).
"""

from __future__ import annotations

import codecs
import struct
from pathlib import Path

from utils.errors import UserError

_MARK = object()
_REFUSED = {
    b"c": "GLOBAL", b"\x93": "STACK_GLOBAL", b"R": "REDUCE", b"b": "BUILD", b"i": "INST", b"o": "OBJ",
    b"\x81": "NEWOBJ", b"\x92": "NEWOBJ_EX", b"P": "PERSID", b"Q": "BINPERSID", b"\x82": "EXT1",
    b"\x83": "EXT2", b"\x84": "EXT4", b"\x97": "NEXT_BUFFER", b"\x98": "READONLY_BUFFER",
}


def _py2_str(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class _Reader:
    def __init__(self, data: bytes, name: str):
        self.data, self.pos, self.name = data, 0, name
        self.stack: list = []
        self.memo: dict[int, object] = {}

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise UserError(f"{self.name}: truncated pickle at byte {self.pos}")
        out = self.data[self.pos: self.pos + n]
        self.pos += n
        return out

    def line(self) -> bytes:
        end = self.data.find(b"\n", self.pos)
        if end < 0:
            raise UserError(f"{self.name}: truncated pickle at byte {self.pos}")
        out = self.data[self.pos: end]
        self.pos = end + 1
        return out

    def pop_mark(self) -> list:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i] is _MARK:
                items = self.stack[i + 1:]
                del self.stack[i:]
                return items
        raise UserError(f"{self.name}: malformed pickle (no MARK) at byte {self.pos}")

    def u(self, fmt: str, n: int) -> int:
        return struct.unpack(fmt, self.take(n))[0]

    def run(self):  # noqa: C901 - one branch per opcode is the clearest form
        s = self.stack
        while True:
            at = self.pos
            op = self.take(1)
            if op in _REFUSED:
                raise UserError(f"{self.name}: refused opcode {_REFUSED[op]} at byte {at}: the file holds more than "
                                "plain lists/dicts/strings/numbers (it would run code with the pickle module)")
            if op == b".":  # STOP
                if len(s) != 1:
                    raise UserError(f"{self.name}: malformed pickle (stack of {len(s)} at STOP)")
                return s.pop()
            elif op == b"\x80":  # PROTO
                self.take(1)
            elif op == b"\x95":  # FRAME
                self.take(8)
            elif op == b"(":
                s.append(_MARK)
            elif op == b"0":
                s.pop()
            elif op == b"1":
                self.pop_mark()
            elif op == b"2":
                s.append(s[-1])
            elif op == b"N":
                s.append(None)
            elif op == b"\x88":
                s.append(True)
            elif op == b"\x89":
                s.append(False)
            elif op == b"I":  # INT (protocol 0; "00"/"01" are False/True)
                text = self.line()
                s.append(False if text == b"00" else True if text == b"01" else int(text))
            elif op == b"L":  # LONG (protocol 0, trailing "L")
                s.append(int(self.line().rstrip(b"L")))
            elif op == b"J":
                s.append(self.u("<i", 4))
            elif op == b"K":
                s.append(self.u("<B", 1))
            elif op == b"M":
                s.append(self.u("<H", 2))
            elif op in (b"\x8a", b"\x8b"):  # LONG1 / LONG4: little-endian two's complement
                n = self.u("<B", 1) if op == b"\x8a" else self.u("<i", 4)
                s.append(int.from_bytes(self.take(n), "little", signed=True))
            elif op == b"F":
                s.append(float(self.line()))
            elif op == b"G":
                s.append(self.u(">d", 8))
            elif op == b"S":  # STRING: a quoted Python 2 str literal
                text = self.line()
                if len(text) < 2 or text[:1] != text[-1:] or text[:1] not in (b"'", b'"'):
                    raise UserError(f"{self.name}: malformed STRING at byte {at}")
                s.append(_py2_str(codecs.escape_decode(text[1:-1])[0]))
            elif op == b"T":
                s.append(_py2_str(self.take(self.u("<i", 4))))
            elif op == b"U":
                s.append(_py2_str(self.take(self.u("<B", 1))))
            elif op == b"V":  # UNICODE (protocol 0)
                s.append(self.line().decode("raw-unicode-escape"))
            elif op == b"X":
                s.append(self.take(self.u("<I", 4)).decode("utf-8", "surrogatepass"))
            elif op == b"\x8c":
                s.append(self.take(self.u("<B", 1)).decode("utf-8", "surrogatepass"))
            elif op == b"\x8d":
                s.append(self.take(self.u("<Q", 8)).decode("utf-8", "surrogatepass"))
            elif op in (b"B", b"C", b"\x8e", b"\x96"):  # BINBYTES, SHORT_BINBYTES, BINBYTES8, BYTEARRAY8
                n = {b"B": ("<I", 4), b"C": ("<B", 1), b"\x8e": ("<Q", 8), b"\x96": ("<Q", 8)}[op]
                s.append(bytes(self.take(self.u(*n))))
            elif op == b"]":
                s.append([])
            elif op == b"}":
                s.append({})
            elif op == b")":
                s.append(())
            elif op == b"\x8f":
                s.append(set())
            elif op == b"l":
                s.append(self.pop_mark())
            elif op == b"t":
                s.append(tuple(self.pop_mark()))
            elif op in (b"\x85", b"\x86", b"\x87"):  # TUPLE1..3
                n = op[0] - 0x84
                items = s[-n:]
                del s[-n:]
                s.append(tuple(items))
            elif op == b"d":
                items = self.pop_mark()
                s.append(dict(zip(items[0::2], items[1::2])))
            elif op == b"a":
                v = s.pop()
                s[-1].append(v)
            elif op == b"e":
                items = self.pop_mark()
                s[-1].extend(items)
            elif op == b"s":
                v, k = s.pop(), s.pop()
                s[-1][k] = v
            elif op == b"u":
                items = self.pop_mark()
                s[-1].update(zip(items[0::2], items[1::2]))
            elif op == b"\x90":  # ADDITEMS
                items = self.pop_mark()
                s[-1].update(items)
            elif op == b"\x91":  # FROZENSET
                s.append(frozenset(self.pop_mark()))
            elif op == b"p":
                self.memo[int(self.line())] = s[-1]
            elif op == b"q":
                self.memo[self.u("<B", 1)] = s[-1]
            elif op == b"r":
                self.memo[self.u("<I", 4)] = s[-1]
            elif op == b"\x94":  # MEMOIZE
                self.memo[len(self.memo)] = s[-1]
            elif op in (b"g", b"h", b"j"):
                key = int(self.line()) if op == b"g" else (self.u("<B", 1) if op == b"h" else self.u("<I", 4))
                if key not in self.memo:
                    raise UserError(f"{self.name}: malformed pickle (memo {key} unset) at byte {at}")
                s.append(self.memo[key])
            else:
                raise UserError(f"{self.name}: unknown pickle opcode {op!r} at byte {at}")


def load_plain_pickle(path: str | Path):
    """The plain value pickled in `path` (see the module docstring); UserError names what was refused."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read {p}: {e.strerror}") from None
    try:
        return _Reader(data, str(p)).run()
    except (IndexError, ValueError, TypeError, AttributeError, struct.error) as e:
        raise UserError(f"{p}: malformed pickle ({type(e).__name__}: {e})") from None
