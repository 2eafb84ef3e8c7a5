// The Node.js peer of `cargo xtask bench-gate`: an echo server on a Unix socket, speaking the
// same framing as ferry-bench's socket peers (crates/ferry-bench/src/linux/sockets.rs):
// a 4-byte little-endian word (bits 0-30 payload length, bit 31 set = no reply wanted), then
// the payload; every frame without bit 31 is echoed back whole.
//
//   node benches/peers/node_echo.js <socket path>
//
// Prints `ready t_ns=<monotonic ns>` once listening; reads `stats` / `quit` on stdin like the
// other servers.
'use strict';
const net = require('net');
const fs = require('fs');
const readline = require('readline');

const NO_REPLY = 0x80000000;
const MAX_PAYLOAD = 16 << 20;
const path = process.argv[2];
if (!path) {
  console.error('usage: node node_echo.js <socket path>');
  process.exit(2);
}
try { fs.unlinkSync(path); } catch (_) { /* not there */ }

const server = net.createServer((sock) => {
  sock.setNoDelay(true);
  let pending = Buffer.alloc(0);
  sock.on('data', (chunk) => {
    pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    let off = 0;
    const out = [];
    while (pending.length - off >= 4) {
      const word = pending.readUInt32LE(off);
      const len = (word & ~NO_REPLY) >>> 0;
      if (len > MAX_PAYLOAD) {
        sock.destroy(new Error(`frame of ${len} bytes announced; at most ${MAX_PAYLOAD}`));
        return;
      }
      if (pending.length - off < 4 + len) break;
      if ((word & NO_REPLY) === 0) out.push(pending.subarray(off, off + 4 + len));
      off += 4 + len;
    }
    if (out.length === 1) sock.write(out[0]);
    else if (out.length > 1) sock.write(Buffer.concat(out));
    pending = pending.subarray(off);
  });
  sock.on('error', () => {});
});

server.listen(path, () => {
  console.log(`ready t_ns=${process.hrtime.bigint()} path=${path}`);
});

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const cmd = line.trim();
  if (cmd === 'stats') {
    const m = process.memoryUsage();
    console.log(`stats vm_rss_kb=${Math.round(m.rss / 1024)}`);
  } else if (cmd === 'quit') {
    process.exit(0);
  }
}).on('close', () => process.exit(0));
