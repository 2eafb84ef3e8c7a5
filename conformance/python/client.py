#!/usr/bin/env python3
"""Ferry protocol conformance: a client written from docs/protocol.md alone (ferry.py) against
the real server (`cargo run -p ferry-transport --example conformance_server`).

    FERRY_RUNTIME_DIR=<dir> python3 conformance/python/client.py <service name>

Prints one line per check and exits non-zero at the first failure.
"""

import struct
import sys
import time

import ferry
from ferry import (CANCEL, CANCELLED, ERROR_RESPONSE, GOODBYE, HELLO, LIMITS_UNACCEPTABLE,
                   MORE, NORMAL, NOTIFICATION, PROTOCOL_VIOLATION, REQUEST, RESPONSE,
                   STREAM_END, STREAM_ITEM, VERSION_UNSUPPORTED)



def pattern(seed, n):
    """n bytes that differ per call and per position."""
    block = bytes((seed * 131 + i * 7) & 0xFF for i in range(251))
    return (block * (n // 251 + 1))[:n]


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def handshake(path):
    conn = ferry.Connection(path)
    check(conn.limits[3] == 1 << 20 and conn.limits[4] == 1 << 20, f"agreed limits {conn.limits}")
    conn.close()
    # Unequal rings, the smallest allowed one included: the mapping's layout (§11) and a call
    # fragmented into frames of 2016 bytes (§12.3).
    small = ferry.Connection(path, ferry.DEFAULT_LIMITS[:3] + (4096, 1 << 18))
    check(small.limits[3:] == (4096, 1 << 18), f"agreed limits {small.limits}")
    payload = pattern(9, 10_000)
    kind, _, answer = small.call(1, payload)
    check(kind == RESPONSE and answer == payload, "a call over 4096-byte rings")
    small.close()
    return f"Welcome, limits {conn.limits}; rings of 4096 and 262144 bytes, mapping {small.mem.size} bytes"


def calls(path):
    """Echo calls from 0 B to 16 MiB, content checked: the ring-size boundaries, fragments."""
    conn = ferry.Connection(path)
    one = conn.fragment  # the largest payload of one frame
    sizes = [0, 1, 7, 8, 9, 100, 4096, one - 1, one, one + 1, 2 * one + 5, 1 << 20, 3 << 20, 16 << 20]
    for cid, n in enumerate(sizes, 1):
        payload = pattern(cid, n)
        kind, _, answer = conn.call(cid, payload)
        check(kind == RESPONSE, f"call of {n} B: kind {kind:#x}")
        check(answer == payload, f"call of {n} B: the echo differs")
    futex, doorbell = conn.woke()
    conn.close()
    return (f"{len(sizes)} calls, {sizes[0]} B to {sizes[-1]} B, frames of at most {one} B; "
            f"woke the server {futex}x by futex, {doorbell}x by doorbell")


def pipelined(path):
    """64 requests written before any answer is read; answered each by its id."""
    conn = ferry.Connection(path)
    sent = {cid: pattern(cid, cid * 1000) for cid in range(1, 65)}
    for cid, payload in sent.items():
        conn.send(REQUEST, cid, payload)
    for cid, payload in sent.items():
        kind, _, answer = conn.take(lambda k, i, c=cid: i == c)
        check(kind == RESPONSE and answer == payload, f"pipelined call {cid}")
    conn.close()
    return f"{len(sent)} calls in flight at once"


def ping_and_ignored_kinds(path):
    """Ping is answered by Pong; control kinds and unsolicited answers in a ring are ignored."""
    conn = ferry.Connection(path)
    conn.send(ferry.PING, 5, b"\x01\x02\x03\x04")
    kind, _, payload = conn.take(lambda k, i: i == 5, timeout=5)
    check(kind == ferry.PONG and payload == b"\x01\x02\x03\x04", f"ping: kind {kind:#x}")
    conn.send(HELLO, 0, ferry.hello(ferry.DEFAULT_LIMITS))
    conn.send(ferry.HANDLES, 0, struct.pack("<II", 0, 0))
    conn.send(RESPONSE, 999, b"nobody asked")
    conn.send(ferry.PONG, 6, b"")
    kind, _, answer = conn.call(2, b"still here")
    check(kind == RESPONSE and answer == b"still here", "a call after ignored kinds")
    conn.close()
    return "Pong; Hello, Handles, an unsolicited Response and Pong in the ring ignored"


def stream(path):
    conn = ferry.Connection(path)
    conn.send(REQUEST, 7, b"stream:100")
    items = []
    while True:
        kind, _, payload = conn.take(lambda k, i: i == 7)
        if kind == STREAM_END:
            break
        check(kind == STREAM_ITEM, f"stream: kind {kind:#x}")
        items.append(payload)
    check(items == [f"item {i}".encode() for i in range(100)], "stream items")
    # 4 MiB of items through a 1 MiB ring: the server waits for space, we wake it (§10.2).
    conn.send(REQUEST, 8, b"stream:64:65536")
    count = 0
    while True:
        kind, _, payload = conn.take(lambda k, i: i == 8)
        if kind == STREAM_END:
            break
        check(kind == STREAM_ITEM and payload == bytes([count % 251]) * 65536, f"big item {count}")
        count += 1
    check(count == 64, f"{count} big items")
    futex, doorbell = conn.woke()
    conn.close()
    return (f"100 small and 64 x 64 KiB StreamItems, each then StreamEnd; "
            f"woke the server {futex}x by futex, {doorbell}x by doorbell")


def cancel(path):
    conn = ferry.Connection(path)
    conn.send(REQUEST, 9, b"wait")
    time.sleep(0.05)
    conn.send(CANCEL, 9)
    kind, _, payload = conn.take(lambda k, i: i == 9, timeout=5)
    check(kind == ERROR_RESPONSE, f"cancel: answered with kind {kind:#x}")
    code, message = ferry.decode_error(payload)
    check(code == CANCELLED, f"cancel: code {code} ({message})")
    conn.close()
    return f"ErrorResponse CANCELLED ({message!r})"


def notification(path):
    conn = ferry.Connection(path)
    conn.send(NOTIFICATION, 0, b"saved")
    _, _, payload = conn.take(lambda k, i: k == NOTIFICATION, timeout=5)
    check(payload == b"got:saved", f"notification: {payload!r}")
    # A fragmented notification: message id unique among our partial messages (§4).
    big = pattern(3, 3 * conn.fragment)
    conn.send(NOTIFICATION, 1, big)
    _, _, payload = conn.take(lambda k, i: k == NOTIFICATION, timeout=10)
    check(payload == b"got:" + big, "fragmented notification")
    conn.close()
    return "sent and pushed back, one frame and fragmented"


def goodbye(path):
    conn = ferry.Connection(path)
    conn.send(GOODBYE, 0, ferry.error_payload(NORMAL, "done"))
    check(conn.control.hung_up(timeout=5), "goodbye: the server did not close")
    conn.close()
    return "the server closed the control socket"


def expect_refusal(path, payload, code, what, kind=HELLO):
    c = ferry.Control(path)
    c.send(ferry.encode(kind, 0, payload))
    got = c.recv()
    check(got is not None and got[0] == ferry.REFUSE, f"{what}: no Refuse ({got})")
    got_code, message = ferry.decode_error(got[2])
    check(got_code == code, f"{what}: Refuse code {got_code:#x}, expected {code:#x} ({message})")
    c.sock.close()
    return message


def refusals(path):
    lim = ferry.DEFAULT_LIMITS
    m = expect_refusal(path, ferry.hello(lim, 2, 2), VERSION_UNSUPPORTED, "version 2")
    expect_refusal(path, ferry.hello(lim[:3] + (1000, 1 << 20)), LIMITS_UNACCEPTABLE, "ring 1000")
    expect_refusal(path, ferry.hello(lim[:3] + (2048, 1 << 20)), LIMITS_UNACCEPTABLE, "ring 2048")
    expect_refusal(path, ferry.hello((0,) + lim[1:]), PROTOCOL_VIOLATION, "a limit of 0")
    expect_refusal(path, b"", PROTOCOL_VIOLATION, "a Request first", kind=REQUEST)
    # §12.6: no complete Hello within the handshake timeout (1 s by default).
    for what, sent in [("silence", b""), ("half a Hello", ferry.encode(HELLO, 0, ferry.hello(lim))[:30])]:
        c = ferry.Control(path, timeout=10)
        c.send(sent)
        got = c.recv()
        check(got is not None and got[0] == ferry.REFUSE, f"{what}: no Refuse ({got})")
        code, message = ferry.decode_error(got[2])
        check(code == ferry.TIMEOUT, f"{what}: Refuse code {code} ({message})")
        c.sock.close()
    return (f"version 2 refused ({m!r}); bad ring sizes, a zero limit, no Hello; "
            f"silence and half a Hello refused TIMEOUT ({message!r})")


def violation(path, what, write, goodbye=True):
    """Writes something invalid; the server must close, after a Goodbye PROTOCOL_VIOLATION
    (§13.2) unless `goodbye` is False (then a plain hang-up is fine)."""
    conn = ferry.Connection(path)
    write(conn)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            conn.wait(timeout=1)
        except ferry.Closed as e:
            conn.close()
            if e.reason is not None:
                check(e.reason[0] == PROTOCOL_VIOLATION, f"{what}: Goodbye code {e.reason[0]}")
                return f"Goodbye {e.reason}"
            check(not goodbye, f"{what}: the server hung up without a Goodbye")
            return "hang-up"
        except TimeoutError:
            pass
    raise AssertionError(f"{what}: the server did not close the connection")


def bad_frames(path):
    def frame(**change):
        f = bytearray(ferry.encode(REQUEST, 1, b"hello"))
        for off, value in change.get("bytes", []):
            f[off] = value
        return bytes(f)

    def record_word(conn, word):
        # A record word the ring rules forbid, published like a record (§9.7).
        at = conn.tx.data + conn.tx.tail % conn.tx.cap
        conn.mem.set_u64(at + 8, 0)
        conn.mem.set_u64(at, word)
        ferry.full_fence()
        conn.ring_server()

    cases = [
        ("bad CRC", lambda c: c.push(frame(bytes=[(12, 0)]))),
        ("bad magic", lambda c: c.push(frame(bytes=[(0, 0x47)]))),
        ("version 2", lambda c: c.push(frame(bytes=[(2, 2)]))),
        ("unknown kind", lambda c: c.push(frame(bytes=[(3, 0x0B)]))),
        ("reserved flag", lambda c: c.push(ferry.encode(REQUEST, 1, b"x", flags=4))),
        ("MORE on Cancel", lambda c: c.push(ferry.encode(CANCEL, 1, b"", flags=MORE))),
        ("trailing bytes", lambda c: c.push(ferry.encode(REQUEST, 1, b"hello") + b"!")),
        ("truncated", lambda c: c.push(ferry.encode(REQUEST, 1, b"hello")[:-1])),
        ("unknown record tag", lambda c: record_word(c, 5 | 0x58585858 << 32)),
        ("record over the maximum", lambda c: record_word(c, (c.tx.max_record + 8) | ferry.TAG_DATA << 32)),
    ]
    seen = [f"{what}: {violation(path, what, write)}" for what, write in cases]
    # §12.4: bytes on the control socket after the handshake end the connection like a hang-up.
    what = "bytes on the control socket"
    result = violation(path, what, lambda c: c.control.send(b"\0"), goodbye=False)
    seen.append(f"{what}: {result}")
    return "; ".join(seen)


CHECKS = [handshake, calls, pipelined, ping_and_ignored_kinds, stream, cancel, notification, goodbye, refusals, bad_frames]


def main():
    service = sys.argv[1] if len(sys.argv) > 1 else "ferry-conformance"
    path = ferry.socket_path(service)
    for check_fn in CHECKS:
        t0 = time.monotonic()
        result = check_fn(path)
        print(f"ok {check_fn.__name__} ({time.monotonic() - t0:.2f}s): {result}", flush=True)
    print(f"conformance: all {len(CHECKS)} checks passed against {path}")


if __name__ == "__main__":
    main()
