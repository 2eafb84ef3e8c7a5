"""A Ferry client written from docs/protocol.md alone: Python 3, standard library only.

Linux only (the Unix transport with a memfd and eventfds, docs/protocol.md §7.1, §9-§13).
Section numbers in comments refer to docs/protocol.md. It is a slow, conforming peer: it
takes the shortcuts that §10.5 allows a slow implementation, and no others.
"""

import ctypes
import errno
import fcntl
import mmap
import os
import platform
import select
import socket
import stat
import struct
import time

# --- §2, §3, §4: frames ---------------------------------------------------------------------

MAGIC = 0x7946
VERSION = 1
HEADER = struct.Struct("<HBBHHIIQ")  # magic version kind flags reserved payload_len crc id
HEADER_LEN = 24
MORE, ABORT = 1, 2
REQUEST, RESPONSE, ERROR_RESPONSE, NOTIFICATION = 0x01, 0x02, 0x03, 0x04
STREAM_ITEM, STREAM_END, CANCEL, PING, PONG, GOODBYE = 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A
HELLO, WELCOME, REFUSE, METRICS_QUERY, METRICS_REPLY, HANDLES = range(0x10, 0x16)
KNOWN_KINDS = set(range(0x01, 0x0B)) | set(range(0x10, 0x16))
FRAGMENTABLE = {REQUEST, RESPONSE, ERROR_RESPONSE, NOTIFICATION, STREAM_ITEM, STREAM_END}
CONTROL_LIMIT = 1 << 20  # §12.3: the most a control frame's payload may hold

# Error codes (§5.1).
NORMAL, CANCELLED, PROTOCOL_VIOLATION, TIMEOUT = 0, 2, 6, 7
VERSION_UNSUPPORTED, LIMITS_UNACCEPTABLE = 0x100, 0x101


def _crc_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc_table()


def crc32c(data, crc=0):
    """CRC-32C (§3); `crc` continues an earlier result."""
    t = _CRC_TABLE
    c = crc ^ 0xFFFFFFFF
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


class ProtocolError(Exception):
    """The peer broke the protocol (or a check of this client failed)."""


class Closed(Exception):
    """The server ended the connection: `reason` is its Goodbye's (code, message) or None."""

    def __init__(self, reason):
        super().__init__(f"connection closed: {reason or 'the server hung up'}")
        self.reason = reason


def encode(kind, cid, payload=b"", flags=0, version=VERSION):
    """One frame (§2): header with the CRC over header (crc field zero) and payload (§3)."""
    head = HEADER.pack(MAGIC, version, kind, flags, 0, len(payload), 0, cid)
    crc = crc32c(payload, crc32c(head))
    return HEADER.pack(MAGIC, version, kind, flags, 0, len(payload), crc, cid) + payload


def decode(buf, limit):
    """The receiver's checks of §8, in order. Returns (kind, flags, id, payload)."""
    if len(buf) < HEADER_LEN:
        raise ProtocolError("truncated frame")
    magic, version, kind, flags, reserved, n, crc, cid = HEADER.unpack_from(buf)
    if magic != MAGIC:
        raise ProtocolError(f"bad magic {magic:#06x}")
    if version != VERSION:
        raise ProtocolError(f"unsupported version {version}")
    if kind not in KNOWN_KINDS:
        raise ProtocolError(f"unknown kind {kind:#04x}")
    if flags & ~(MORE | ABORT):
        raise ProtocolError(f"reserved flags {flags:#06x}")
    if reserved:
        raise ProtocolError("reserved field not zero")
    if flags and (kind not in FRAGMENTABLE or flags == MORE | ABORT):
        raise ProtocolError(f"flags {flags:#x} not allowed on kind {kind:#04x}")
    if (kind == CANCEL or flags & ABORT) and n:
        raise ProtocolError("payload not allowed")
    if n > limit:
        raise ProtocolError(f"payload of {n} bytes over the limit of {limit}")
    if len(buf) != HEADER_LEN + n:
        raise ProtocolError("truncated frame" if len(buf) < HEADER_LEN + n else "trailing bytes")
    zeroed = bytes(buf[:12]) + b"\0\0\0\0" + bytes(buf[16:24])
    if crc32c(buf[HEADER_LEN:], crc32c(zeroed)) != crc:
        raise ProtocolError("CRC mismatch")
    return kind, flags, cid, bytes(buf[HEADER_LEN:])


def error_payload(code, message=""):
    return struct.pack("<I", code) + message.encode()


def decode_error(payload):
    if len(payload) < 4:
        raise ProtocolError("error payload shorter than 4 bytes")
    return struct.unpack_from("<I", payload)[0], payload[4:].decode("utf-8")


# --- §5.2, §5.3: handshake payloads -----------------------------------------------------------

LIMITS = struct.Struct("<IIIII")  # message, partials, buffered, c2s ring, s2c ring


def hello(limits, min_version=1, max_version=1):
    return struct.pack("<BBH", min_version, max_version, 0) + LIMITS.pack(*limits)


# --- memory ordering (§10.5) ------------------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
_SYS_FUTEX = {"x86_64": 202, "aarch64": 98}[platform.machine()]
_FUTEX_WAKE = 1  # shared: no FUTEX_PRIVATE_FLAG (§10.3)
# A full (StoreLoad) barrier: `mfence; ret` or `dmb ish; ret`, run from an executable page.
_FENCE_CODE = {"x86_64": bytes.fromhex("0faef0c3"), "aarch64": bytes.fromhex("bf3b03d5c0035fd6")}
_fence_page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
_fence_page[: len(_FENCE_CODE[platform.machine()])] = _FENCE_CODE[platform.machine()]
full_fence = ctypes.CFUNCTYPE(None)(ctypes.addressof(ctypes.c_char.from_buffer(_fence_page)))


class Memory:
    """The connection's shared mapping. Words are read and written as whole, aligned 4- and
    8-byte accesses through ctypes (one machine load or store each); on x86-64 and in this
    single-threaded program, program order then gives the acquire and release orderings §10
    asks for. The full fences of §10 are `full_fence()`."""

    def __init__(self, fd, size):
        self.map = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self.base = ctypes.addressof(ctypes.c_char.from_buffer(self.map))
        self.size = size

    def u32(self, off):
        return ctypes.c_uint32.from_address(self.base + off).value

    def set_u32(self, off, v):
        ctypes.c_uint32.from_address(self.base + off).value = v

    def u64(self, off):
        return ctypes.c_uint64.from_address(self.base + off).value

    def set_u64(self, off, v):
        ctypes.c_uint64.from_address(self.base + off).value = v

    def futex_wake(self, off):
        _libc.syscall(_SYS_FUTEX, ctypes.c_void_p(self.base + off), _FUTEX_WAKE, 0x7FFFFFFF, None, None, 0)


# --- §9: the ring ----------------------------------------------------------------------------

RING_MAGIC = int.from_bytes(b"FERRYRNG", "little")
LAYOUT_VERSION = 3
RING_HEADER = 384
TAIL, CONSUMER_SLEEP = 128, 136  # producer line
HEAD, PRODUCER_SLEEP = 256, 264  # consumer line
TAG_DATA = int.from_bytes(b"DATA", "little")
TAG_PAD = int.from_bytes(b"PAD!", "little")
TOKEN_FUTEX, TOKEN_DOORBELL = 1, 2


def pad8(n):
    return (n + 7) & ~7


class Ring:
    """One ring of the mapping at offset `base`: this client is its producer or its consumer."""

    def __init__(self, mem, base, capacity, wake_peer):
        self.mem, self.base, self.cap = mem, base, capacity
        self.data = base + RING_HEADER
        self.wake_peer = wake_peer  # rings the server's doorbell
        if mem.u64(base) != RING_MAGIC:  # §9.8: check before use
            raise ProtocolError("ring magic missing")
        if mem.u32(base + 8) != LAYOUT_VERSION:
            raise ProtocolError(f"ring layout version {mem.u32(base + 8)}, expected {LAYOUT_VERSION}")
        if mem.u32(base + 12) != capacity:
            raise ProtocolError("ring capacity differs from the agreed ring size")
        self.head = mem.u64(base + HEAD)
        self.tail = mem.u64(base + TAIL)
        if self.head % 8 or self.tail % 8 or not 0 <= self.tail - self.head <= capacity:
            raise ProtocolError("ring cursors invalid at attach")
        self.published = self.head  # consumer: the head last stored
        self.woke = {TOKEN_FUTEX: 0, TOKEN_DOORBELL: 0}  # wake-ups delivered, by mechanism
        self.max_record = capacity // 2 - 8  # §9.4

    def _take_sleeper(self, off):
        """§10.2, after a publish and a full fence: wake the peer if its sleep word says so."""
        token = self.mem.u32(off)
        if token:
            self.mem.set_u32(off, 0)  # §10.5: a plain store may stand for the compare-exchange
            if token & TOKEN_FUTEX:
                self.mem.futex_wake(off)
                self.woke[TOKEN_FUTEX] += 1
            if token & TOKEN_DOORBELL:
                self.wake_peer()
                self.woke[TOKEN_DOORBELL] += 1
            # other bits: ignored (§10.2)

    # Producer side.
    def _need(self, n):
        rec = 8 + pad8(n)
        to_end = self.cap - self.tail % self.cap
        return (rec, False) if rec <= to_end else (to_end + rec, True)

    def fits(self, n):
        need, _ = self._need(n)
        if self.cap - (self.tail - self.head) >= need + 8:  # §9.5: record plus terminator
            return True
        head = self.mem.u64(self.base + HEAD)
        if head % 8 or head < self.head or head > self.tail:
            raise ProtocolError(f"the server's head {head} is invalid (ours: tail {self.tail})")
        self.head = head
        return self.cap - (self.tail - self.head) >= need + 8

    def try_push(self, record):
        """Writes one record (a frame) if it fits now (§9.5, §9.6)."""
        n = len(record)
        if n > self.max_record:
            raise ValueError(f"record of {n} bytes over the ring's maximum {self.max_record}")
        if not self.fits(n):
            return False
        rec = 8 + pad8(n)
        _, padded = self._need(n)
        first = self.tail  # where the publishing word goes
        at = self.tail
        if padded:
            at += self.cap - self.tail % self.cap
        off = self.data + at % self.cap
        self.mem.map[off + 8 : off + 8 + n] = record
        end = at + rec
        self.mem.set_u64(self.data + end % self.cap, 0)  # the terminator (§9.6)
        word = n | TAG_DATA << 32
        if padded:  # the record at 0 first, then the padding word, which publishes
            self.mem.set_u64(off, word)
            word = (self.cap - first % self.cap - 8) | TAG_PAD << 32
        self.mem.set_u64(self.data + first % self.cap, word)  # release: publishes
        self.tail = end
        self.mem.set_u64(self.base + TAIL, end)
        full_fence()
        self._take_sleeper(self.base + CONSUMER_SLEEP)
        return True

    # Consumer side.
    def try_pop(self):
        """The next record's bytes, or None (§9.7). Validates every word it reads."""
        for _ in range(2):
            off = self.head % self.cap
            word = self.mem.u64(self.data + off)
            if word == 0:
                return None
            n, tag = word & 0xFFFFFFFF, word >> 32
            to_end = self.cap - off
            room = self.cap - (self.head - self.published)
            if tag == TAG_PAD:
                if off == 0 or n + 8 != to_end or to_end + 8 > room:
                    raise ProtocolError("bad padding record")
                self.head += to_end
                continue
            if tag != TAG_DATA:
                raise ProtocolError(f"bad record tag {tag:#x}")
            rec = 8 + pad8(n)
            if n > self.max_record or rec > to_end or rec + 8 > room:
                raise ProtocolError(f"bad record length {n}")
            start = self.data + off + 8
            data = self.mem.map[start : start + n]
            self.head += rec
            return data
        raise ProtocolError("padding after padding")

    def release(self):
        """Publishes the head (release), then wakes a sleeping producer (§10.2)."""
        if self.head != self.published:
            self.mem.set_u64(self.base + HEAD, self.head)
            self.published = self.head
            full_fence()
            self._take_sleeper(self.base + PRODUCER_SLEEP)

    def has_record(self):
        return self.mem.u64(self.data + self.head % self.cap) != 0


# --- §12: the Unix transport ------------------------------------------------------------------


def socket_path(service):
    """§12.1: service name to socket path (Linux)."""
    if not service or len(service) > 64 or service[0] == "." or any(
        not (c.isascii() and (c.isalnum() or c in "._-")) for c in service
    ):
        raise ValueError(f"invalid service name {service!r}")
    d = os.environ.get("FERRY_RUNTIME_DIR") or ""
    if not d:
        xdg = os.environ.get("XDG_RUNTIME_DIR") or ""
        d = os.path.join(xdg, "ferry") if xdg else os.path.join(os.environ.get("TMPDIR", "/tmp"), f"ferry-{os.geteuid()}")
    st = os.lstat(d)  # §12.1: the directory must be private
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise ProtocolError(f"{d} is not a private directory of this user")
    return os.path.join(d, f"{service}.sock")


def layout(c2s, s2c):
    """§11: offsets of the two rings and the size of the mapping."""
    up = lambda n: (n + 4095) // 4096 * 4096  # noqa: E731
    s2c_off = up(RING_HEADER + c2s)
    return 0, s2c_off, up(s2c_off + RING_HEADER + s2c)


class Control:
    """The control socket: frames delimited by payload_len, descriptors with SCM_RIGHTS."""

    def __init__(self, path, timeout=2.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        pid, uid, _gid = struct.unpack("3i", self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        if uid != os.geteuid():
            raise ProtocolError(f"the server (pid {pid}) runs as uid {uid}, not as us")
        self.fds = []

    def send(self, frame):
        self.sock.sendall(frame)

    def _read(self, n):
        buf = b""
        while len(buf) < n:
            data, anc, flags, _ = self.sock.recvmsg(n - len(buf), socket.CMSG_SPACE(4 * 4))
            for level, typ, raw in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                    self.fds += struct.unpack(f"{len(raw) // 4}i", raw[: len(raw) // 4 * 4])
            if flags & socket.MSG_CTRUNC:
                raise ProtocolError("more descriptors than a control frame may carry")
            if not data:
                if buf:
                    raise ProtocolError("the server closed the control socket inside a frame")
                return None
            buf += data
        return buf

    def recv(self, limit=CONTROL_LIMIT):
        """One frame (kind, id, payload), or None when the server hung up first."""
        head = self._read(HEADER_LEN)
        if head is None:
            return None
        n = HEADER.unpack_from(head)[5]
        if n > limit:
            raise ProtocolError(f"control frame of {n} bytes over {limit}")
        rest = self._read(n) if n else b""
        if rest is None:
            raise ProtocolError("the server closed the control socket inside a frame")
        kind, _flags, cid, payload = decode(head + rest, limit)
        return kind, cid, payload

    def hung_up(self, timeout=0.0):
        """Whether the server ended the conversation (or wrote, which also ends it: §12.4)."""
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return False
        self.sock.setblocking(False)
        try:
            return self.sock.recv(1, socket.MSG_PEEK) is not None
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True
        finally:
            self.sock.setblocking(True)


DEFAULT_LIMITS = (16 << 20, 16, 64 << 20, 1 << 20, 1 << 20)


class Connection:
    """A connected client: the handshake (§7, §12), then frames through the rings."""

    def __init__(self, path, limits=DEFAULT_LIMITS):
        self.control = Control(path)
        self.control.send(encode(HELLO, 0, hello(limits)))
        got = self.control.recv()
        if got is None:
            raise Closed(None)
        kind, _, payload = got
        if kind == REFUSE:
            code, message = decode_error(payload)
            raise Refused(code, message)
        if kind != WELCOME or len(payload) != 24:
            raise ProtocolError(f"expected a 24-byte Welcome, got kind {kind:#x}")
        version, r0, r1 = struct.unpack_from("<BBH", payload)
        agreed = LIMITS.unpack_from(payload, 4)
        if version != VERSION or r0 or r1 or any(a < 1 or a > b for a, b in zip(agreed, limits)):
            raise ProtocolError(f"unacceptable Welcome {payload.hex()}")
        self.limits = agreed
        fds, self.control.fds = self.control.fds, []
        if len(fds) != 3:  # §7.1: memfd, server eventfd, client eventfd
            for fd in fds:
                os.close(fd)
            raise ProtocolError(f"Welcome carried {len(fds)} descriptors, expected 3")
        memfd, self.server_bell, self.bell = fds
        c2s_cap, s2c_cap = agreed[3], agreed[4]
        for cap in (c2s_cap, s2c_cap):
            if cap & (cap - 1) or not 4096 <= cap <= 1 << 30:
                raise ProtocolError(f"agreed ring size {cap} is not allowed (§12.2)")
        c2s_off, s2c_off, total = layout(c2s_cap, s2c_cap)
        if os.fstat(memfd).st_size != total:  # §11: checks before mapping
            raise ProtocolError("shared memory of the wrong size")
        seals = fcntl.fcntl(memfd, getattr(fcntl, "F_GET_SEALS", 1034))
        if seals & 0b111 != 0b111:  # F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW
            raise ProtocolError(f"shared memory not sealed ({seals:#x})")
        self.mem = Memory(memfd, total)
        os.close(memfd)
        self.tx = Ring(self.mem, c2s_off, c2s_cap, self.ring_server)
        self.rx = Ring(self.mem, s2c_off, s2c_cap, self.ring_server)
        self.control.sock.settimeout(None)  # §12.4: the handshake is over
        self.frame_limit = self.rx.max_record - HEADER_LEN  # §12.3: our receiver's limit
        self.fragment = self.tx.max_record - HEADER_LEN  # the server's receiver limit
        self.partial = {}  # (kind, id) -> bytearray (§6.1)
        self.inbox = []  # complete messages (kind, id, payload) not yet taken
        self.goodbye = None

    def ring_server(self):
        """Rings the server's doorbell: adds 1 to its eventfd (§10.3)."""
        try:
            os.write(self.server_bell, struct.pack("<Q", 1))
        except BlockingIOError:
            pass  # the counter is saturated: the doorbell is rung already

    # Receiving.
    def poll(self):
        """Moves every complete record into the inbox; True if anything arrived."""
        got = False
        while True:
            record = self.rx.try_pop()
            if record is None:
                break
            got = True
            kind, flags, cid, payload = decode(record, self.frame_limit)
            key = (kind, cid)
            if flags & ABORT:
                self.partial.pop(key, None)
                continue
            if flags & MORE or key in self.partial:
                buf = self.partial.setdefault(key, bytearray())
                buf += payload
                if len(buf) > self.limits[0]:
                    raise ProtocolError("message over max_message_size")
                if flags & MORE:
                    continue
                payload = bytes(self.partial.pop(key))
            if kind == GOODBYE:
                self.goodbye = decode_error(payload)
            elif kind == PING:
                self.send(PONG, cid, payload)
            self.inbox.append((kind, cid, payload))
        self.rx.release()
        return got

    def wait(self, space=None, timeout=30.0):
        """Sleeps until a record arrives (or `space` bytes fit in the outgoing ring): the
        sleeper's side of §10.1, with the doorbell token."""
        deadline = time.monotonic() + timeout
        while True:
            if self.goodbye is not None:
                raise Closed(self.goodbye)
            if self.poll() or (space is not None and self.tx.fits(space)):
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the server did not answer in time")
            self.mem.set_u32(self.rx.base + CONSUMER_SLEEP, TOKEN_DOORBELL)
            if space is not None:
                self.mem.set_u32(self.tx.base + PRODUCER_SLEEP, TOKEN_DOORBELL)
            full_fence()
            # A peer publishing fence-free needs a heavy barrier we do not have: poll (§10.6).
            fence_free = self.mem.u32(self.rx.base + 144) or self.mem.u32(self.tx.base + 272)
            ready = self.rx.has_record() or (space is not None and self.tx.fits(space))
            if not ready:
                nap = 0.001 if fence_free else 1.0
                r, _, _ = select.select([self.bell, self.control.sock], [], [], nap)
                if self.control.sock in r and self.control.hung_up():
                    if not self.poll():  # what the server wrote before it left still counts
                        raise Closed(self.goodbye)
            self.mem.set_u32(self.rx.base + CONSUMER_SLEEP, 0)
            self.mem.set_u32(self.tx.base + PRODUCER_SLEEP, 0)
            try:
                os.read(self.bell, 8)
            except BlockingIOError:
                pass

    def take(self, match, timeout=30.0):
        """Waits for the first inbox message for which match(kind, id) holds, and removes it."""
        deadline = time.monotonic() + timeout
        while True:
            for i, (kind, cid, payload) in enumerate(self.inbox):
                if match(kind, cid):
                    del self.inbox[i]
                    return kind, cid, payload
            self.wait(timeout=max(0.0, deadline - time.monotonic()))

    # Sending.
    def push(self, frame):
        while not self.tx.try_push(frame):
            self.wait(space=len(frame))

    def send(self, kind, cid, payload=b"", fragment=None):
        """One message, fragmented when larger than one frame may be (§6)."""
        size = fragment or self.fragment
        if len(payload) <= size:
            return self.push(encode(kind, cid, payload))
        for at in range(0, len(payload), size):
            last = at + size >= len(payload)
            self.push(encode(kind, cid, payload[at : at + size], 0 if last else MORE))

    def call(self, cid, payload, timeout=120.0):
        self.send(REQUEST, cid, payload)
        return self.take(lambda k, i: i == cid and k in (RESPONSE, ERROR_RESPONSE), timeout)

    def woke(self):
        """Wake-ups this client delivered to the server: (futex, doorbell)."""
        return tuple(self.tx.woke[t] + self.rx.woke[t] for t in (TOKEN_FUTEX, TOKEN_DOORBELL))

    def close(self):
        self.control.sock.close()
        for fd in (self.bell, self.server_bell):
            os.close(fd)


class Refused(Exception):
    def __init__(self, code, message):
        super().__init__(f"refused with code {code:#x}: {message}")
        self.code, self.message = code, message
