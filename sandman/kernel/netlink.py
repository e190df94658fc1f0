"""The netlink wire format and the two exchanges sandman needs: a dump, and an nf_tables batch.

Plain `socket` and `struct`. Encoding and decoding are pure functions (tested without a kernel);
`dump` and `batch` each open one socket, make one exchange and close it. Errors are OSError with
the errno, the kernel's extended-ack message when it gives one, and the object as `filename`.
"""

from __future__ import annotations

import errno
import itertools
import os
import socket
import struct
import time
from collections.abc import Iterator, Sequence
from typing import NamedTuple

# <linux/netlink.h>
NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
NLA_HEADER = struct.Struct("=HH")  # length, type
NLA_F_NESTED, NLA_TYPE_MASK = 0x8000, 0x3FFF
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP_INTR, NLM_F_DUMP = 0x1, 0x4, 0x10, 0x300
NLM_F_ACK_TLVS = 0x200  # on an NLMSG_ERROR: extended-ack attributes follow
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLMSGERR_ATTR_MSG = 1
SOL_NETLINK, NETLINK_CAP_ACK, NETLINK_EXT_ACK = 270, 10, 11
NETLINK_ROUTE, NETLINK_NETFILTER = 0, 12
# <linux/netfilter/nfnetlink.h>
NFGENMSG = struct.Struct("=BBH")  # family, version, resource id (big-endian subsystem)
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END, NFNL_SUBSYS_NFTABLES = 0x10, 0x11, 10

_DUMP_PATIENCE = 10.0  # seconds of interrupted dumps before giving up
_TIMEOUT = 10.0  # seconds: the kernel answers at once; never hang on a lost reply


# --- encoding ------------------------------------------------------------------------------------


def nla(kind: int, value: bytes) -> bytes:
    data = NLA_HEADER.pack(NLA_HEADER.size + len(value), kind) + value
    return data + bytes(-len(data) % 4)


def nest(kind: int, *children: bytes) -> bytes:
    return nla(kind | NLA_F_NESTED, b"".join(children))


def be32(value: int) -> bytes:
    return struct.pack(">i" if value < 0 else ">I", value)


def asciiz(text: str) -> bytes:
    return text.encode() + b"\0"


def message(kind: int, flags: int, sequence: int, body: bytes) -> bytes:
    return NLMSG_HEADER.pack(NLMSG_HEADER.size + len(body), kind, flags, sequence, 0) + body


# --- decoding ------------------------------------------------------------------------------------


def messages(buffer: bytes) -> Iterator[tuple[int, int, int, bytes]]:
    """The netlink messages in one read: (type, flags, sequence, payload)."""
    offset = 0
    while offset + NLMSG_HEADER.size <= len(buffer):
        length, kind, flags, sequence, _ = NLMSG_HEADER.unpack_from(buffer, offset)
        if length < NLMSG_HEADER.size:
            raise ValueError(f"netlink message of length {length} at offset {offset}")
        yield kind, flags, sequence, buffer[offset + NLMSG_HEADER.size : offset + length]
        offset += (length + 3) & ~3


def attributes(data: bytes, offset: int = 0) -> Iterator[tuple[int, bytes]]:
    """The (type, value) netlink attributes in `data` from `offset`, flags masked off."""
    while offset + NLA_HEADER.size <= len(data):
        length, kind = NLA_HEADER.unpack_from(data, offset)
        if length < NLA_HEADER.size:
            break
        yield kind & NLA_TYPE_MASK, data[offset + NLA_HEADER.size : offset + length]
        offset += (length + 3) & ~3


def error_of(flags: int, payload: bytes) -> tuple[int, str]:
    """(errno, the kernel's message or "") of an NLMSG_ERROR; errno 0 is an acknowledgement.
    With NETLINK_CAP_ACK the request comes back as its header alone, then the ext-ack TLVs."""
    code = -struct.unpack_from("=i", payload)[0]
    text = ""
    if flags & NLM_F_ACK_TLVS:
        found = dict(attributes(payload, 4 + NLMSG_HEADER.size))
        text = found.get(NLMSGERR_ATTR_MSG, b"").split(b"\0", 1)[0].decode(errors="replace")
    return code, text


def _raise(code: int, text: str, what: str, doing: str) -> None:
    detail = f"{doing}: {os.strerror(code)}" + (f" ({text})" if text else "")
    raise OSError(code, detail, what)


# --- exchanges -----------------------------------------------------------------------------------


def _socket(protocol: int) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, protocol)
    sock.settimeout(_TIMEOUT)
    for option in (NETLINK_CAP_ACK, NETLINK_EXT_ACK):
        sock.setsockopt(SOL_NETLINK, option, 1)
    sock.bind((0, 0))
    return sock


def dump(protocol: int, kind: int, body: bytes, what: str) -> list[bytes]:
    """Send one dump request and return every reply's payload. A dump the kernel marks as
    interrupted (NLM_F_DUMP_INTR: the objects changed while it ran) is taken again, after a
    pause that doubles: on a busy host (a hundred veths going with their netns, other tools
    adding links) three dumps back to back were all interrupted. Bounded: _DUMP_PATIENCE."""
    deadline = time.monotonic() + _DUMP_PATIENCE
    pause = 0.001
    while True:
        sequence = next(_DUMP_SEQUENCE)
        request = message(kind, NLM_F_REQUEST | NLM_F_DUMP, sequence, body)
        payloads, interrupted = _dump_once(protocol, request, sequence, what)
        if not interrupted:
            return payloads
        if time.monotonic() + pause > deadline:
            raise OSError(errno.EAGAIN, "netlink dump: interrupted by changes every time", what)
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


_DUMP_SOCKETS: dict[int, socket.socket] = {}


def process_socket(protocol: int) -> socket.socket:
    """The process's socket for `protocol`, for dumps and single requests: closing an
    nf_tables socket costs the kernel 1.5 ms, once per sandbox otherwise."""
    sock = _DUMP_SOCKETS.get(protocol)
    if sock is None:
        sock = _DUMP_SOCKETS[protocol] = _socket(protocol)
    return sock


def _drop_process_socket(protocol: int) -> None:
    sock = _DUMP_SOCKETS.pop(protocol, None)
    if sock is not None:
        sock.close()


def _receive(sock: socket.socket) -> bytes:
    """The next datagram whole, read at its own size (peeked first: a netlink reply never
    overflows the read). Not a read into a large buffer shrunk to the reply: glibc keeps each
    such buffer, shrunk in place by mremap, as a mapping of its own, and the few replies kept
    (a page each) left apply of 1000 sandboxes with 1000 mappings more, which every later fork
    of apply copies (0.5 to 2 ms a fork)."""
    size = sock.recv_into(_PEEKED, len(_PEEKED), socket.MSG_PEEK | socket.MSG_TRUNC)
    return sock.recv(size)


# What a peek reads into; only the datagram's length is wanted and its content is never read
# (threads may share it). 32 KiB, not one byte: the kernel sizes the next replies of a dump by
# the largest read it has seen, up to 32 KiB, and smaller ones made a dump four times the reads.
_PEEKED = bytearray(32768)


_DUMP_SEQUENCE = itertools.count(1)  # dumps and requests share the process's sockets


def _dump_once(protocol: int, request: bytes, sequence: int, what: str) -> tuple[list[bytes], bool]:
    """One dump on the process's socket for `protocol`. Replies of an earlier, abandoned dump
    carry another sequence number and are skipped; an exchange cut short drops the socket."""
    sock = process_socket(protocol)
    payloads: list[bytes] = []
    interrupted = finished = False
    try:
        sock.send(request)
        while True:
            for kind, flags, number, payload in messages(_receive(sock)):
                if number != sequence:
                    continue
                interrupted |= bool(flags & NLM_F_DUMP_INTR)
                if kind in (NLMSG_DONE, NLMSG_ERROR):
                    finished = True
                    code, text = error_of(flags, payload) if len(payload) >= 4 else (0, "")
                    if code:
                        _raise(code, text, what, "netlink dump")
                    return payloads, interrupted
                payloads.append(payload)
    except BaseException:
        if not finished:  # cut short: what is left of the reply must not reach the next dump
            _drop_process_socket(protocol)
        raise


def request(
    protocol: int, kind: int, body: bytes, what: str, doing: str, *, flags: int = 0
) -> None:
    """Send one request asking for an ACK, on the process's socket for `protocol`; OSError with
    the kernel's errno and message if it refuses."""
    sock = process_socket(protocol)
    try:
        _, code, text = _answer(sock, kind, body, flags)
    except BaseException:
        _drop_process_socket(protocol)  # cut short: what is left of the answer goes with it
        raise
    if code:
        _raise(code, text, what, doing)


def route_socket() -> socket.socket:
    """A NETLINK_ROUTE socket of the caller's own, in the netns of the calling thread (made
    while the thread is in a sandbox's netns, it stays there): for `call`."""
    return _socket(NETLINK_ROUTE)


def call(
    sock: socket.socket, kind: int, body: bytes, what: str, doing: str, *, flags: int = 0
) -> list[bytes]:
    """One request asking for an ACK on `sock`: the payloads of the replies before it (a GET's
    answer), or OSError(errno, "doing: strerror (the kernel's message)", what) if refused."""
    replies, code, text = _answer(sock, kind, body, flags)
    if code:
        _raise(code, text, what, doing)
    return replies


def _answer(
    sock: socket.socket, kind: int, body: bytes, flags: int
) -> tuple[list[bytes], int, str]:
    """Send the request; (the replies before its ACK, errno or 0, the kernel's message). Replies
    to other requests (an abandoned exchange's) are skipped by their sequence number."""
    sequence = next(_DUMP_SEQUENCE)
    sock.send(message(kind, NLM_F_REQUEST | NLM_F_ACK | flags, sequence, body))
    replies: list[bytes] = []
    while True:
        for reply, reply_flags, number, payload in messages(_receive(sock)):
            if number != sequence:
                continue
            if reply != NLMSG_ERROR:
                replies.append(payload)
                continue
            code, text = error_of(reply_flags, payload)
            return replies, code, text


def _exchange(
    sock: socket.socket, requests: Sequence[Request], what: str
) -> dict[int, tuple[int, str]]:
    pending = set(range(2, len(requests) + 2))
    errors: dict[int, tuple[int, str]] = {}
    sock.sendall(encode_batch(requests))
    while pending:
        for kind, flags, sequence, payload in messages(_receive(sock)):
            if kind != NLMSG_ERROR:
                continue
            code, text = error_of(flags, payload)
            if sequence == 1:  # the batch itself was refused
                _raise(code, text, what, "nftables batch")
            pending.discard(sequence)
            if code:
                errors[sequence] = (code, text)
    return errors


class Request(NamedTuple):
    """One nf_tables message of a batch: its type (NFT_MSG_*), flags, body, and what it does."""

    kind: int
    flags: int
    body: bytes
    doing: str


def encode_batch(requests: Sequence[Request]) -> bytes:
    """BEGIN, the requests (sequence 2, 3, ...; each asking for an ACK), END."""
    marker = NFGENMSG.pack(socket.AF_UNSPEC, 0, socket.htons(NFNL_SUBSYS_NFTABLES))
    data = message(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 1, marker)
    for sequence, request in enumerate(requests, start=2):
        kind = NFNL_SUBSYS_NFTABLES << 8 | request.kind
        data += message(kind, NLM_F_REQUEST | NLM_F_ACK | request.flags, sequence, request.body)
    return data + message(NFNL_MSG_BATCH_END, NLM_F_REQUEST, len(requests) + 2, marker)


_BATCH_SOCKETS: dict[int, socket.socket] = {}


def _batch_socket() -> socket.socket:
    """One nf_tables socket per process, reused by every batch: closing one after a commit takes
    the kernel about 11 ms (it waits out the transaction), once per sandbox otherwise."""
    sock = _BATCH_SOCKETS.get(NETLINK_NETFILTER)
    if sock is None:
        sock = _BATCH_SOCKETS[NETLINK_NETFILTER] = _socket(NETLINK_NETFILTER)
    return sock


def _drop_batch_socket() -> None:
    sock = _BATCH_SOCKETS.pop(NETLINK_NETFILTER, None)
    if sock is not None:
        sock.close()


def batch(requests: Sequence[Request], what: str) -> None:
    """Apply the requests as ONE nf_tables transaction: all of them, or none (the first error)."""
    if not requests:
        return
    try:
        errors = _exchange(_batch_socket(), requests, what)
    except BaseException:
        _drop_batch_socket()  # replies may be left unread on it: the next batch takes a new one
        raise
    if errors:
        sequence = min(errors)
        _raise(*errors[sequence], what, requests[sequence - 2].doing)
