#!/usr/bin/env node
// One load generator process of the django-ws benchmark.
//
// The Python harness (bench/loadgen.py) starts several of these and drives them with
// JSON lines on stdin; each answers with JSON lines on stdout. A generator holds a share
// of the scenario's websocket connections. Publishing is open loop: messages leave on a
// schedule whatever the server does, so a slow server shows up as latency and loss, not
// as a lower offered rate.
//
// Every message carries its step, room, sender (member index in the room), the sender's
// sequence number and its send time from CLOCK_MONOTONIC (process.hrtime), which all
// generator processes on the machine share. Receivers count what they got per step, so
// the harness can compute exact losses per member: every member must receive every
// message sent to its room, its own included.
"use strict";

const readline = require("readline");
const WebSocket = require("ws");

// Latency histogram: bucket i holds latencies in [e^(i/100), e^((i+1)/100)) microseconds,
// about 1% wide; 2000 buckets reach past 8 minutes.
const BUCKETS = 2000;
const TICK_MS = 2;
const LAG_INTERVAL_MS = 10;

const nowUs = () => Number(process.hrtime.bigint() / 1000n);

function bucketOf(latencyUs) {
  if (latencyUs < 1) return 0;
  const index = Math.floor(Math.log(latencyUs) * 100);
  return index < BUCKETS ? index : BUCKETS - 1;
}

function sparse(histogram) {
  const pairs = [];
  for (let i = 0; i < histogram.length; i++) if (histogram[i]) pairs.push([i, histogram[i]]);
  return pairs;
}

// The integers of a message this generator wrote, in order: {"k":..,"r":..,"m":..,"q":..,
// "t":..,"p":".."} or {"e":..,"q":..,"t":..,"p":".."}. Read straight from the frame's bytes:
// at 50,000 deliveries/s per process, decoding and JSON.parse are what saturate a core.
// Returns null for anything else (a server that altered the text), which the caller
// then parses as JSON to say what it got.
const COLON = 58;
const MINUS = 45;
const ZERO = 48;
const NINE = 57;
const QUOTE = 34;

function readInts(buf, count) {
  const out = new Array(count);
  let found = 0;
  let i = 0;
  const n = buf.length;
  while (found < count && i < n) {
    if (buf[i] !== COLON) {
      i++;
      continue;
    }
    i++;
    if (buf[i] === QUOTE) return null;
    let negative = false;
    if (buf[i] === MINUS) {
      negative = true;
      i++;
    }
    let value = 0;
    const start = i;
    while (i < n && buf[i] >= ZERO && buf[i] <= NINE) {
      value = value * 10 + (buf[i] - ZERO);
      i++;
    }
    if (i === start) return null;
    out[found++] = negative ? -value : value;
  }
  return found === count ? out : null;
}

function reply(message) {
  process.stdout.write(JSON.stringify(message) + "\n");
}

class Conn {
  constructor(spec) {
    // spec: [id, path, room, member, roomSize, source]; source: the local address to
    // connect from (127.0.0.x), or null for the default, when one address's ephemeral
    // ports would not be enough for all the connections.
    this.id = spec[0];
    this.path = spec[1];
    this.room = spec[2];
    this.member = spec[3];
    this.roomSize = spec[4];
    this.source = spec[5] || null;
    this.ws = null;
    this.open = false;
    this.closeCode = null;
    this.seq = 0;
    this.received = 0; // messages of the current step
    this.lastSeq = new Int32Array(Math.max(1, this.roomSize)).fill(-1);
    this.echoSent = 0;
  }
}

class Generator {
  constructor() {
    this.conns = [];
    this.step = -1;
    this.hist = new Uint32Array(BUCKETS);
    this.maxLatencyUs = 0;
    this.late = 0;
    this.gaps = 0;
    this.reorders = 0;
    this.foreign = 0;
    this.closes = {};
    this.padding = "";
    this.mode = "fanout";
    this.echoRunning = false;
    this.echoCount = 0;
    // Event-loop lag: how late a 10 ms timer fires. A generator whose loop stalls (GC,
    // starved of CPU) stamps and reads messages late, and its latencies with it.
    this.maxLagMs = 0;
    let expected = performance.now() + LAG_INTERVAL_MS;
    setInterval(() => {
      const now = performance.now();
      const lag = now - expected;
      if (lag > this.maxLagMs) this.maxLagMs = lag;
      expected = now + LAG_INTERVAL_MS;
    }, LAG_INTERVAL_MS).unref();
  }

  // Connections ---------------------------------------------------------------------

  async openAll(command) {
    const started = Date.now();
    const cpuStart = process.cpuUsage();
    const wallStart = nowUs();
    this.conns = command.conns.map((spec) => new Conn(spec));
    const concurrency = command.concurrency || 100;
    const timeoutMs = (command.timeout || 30) * 1000;
    const errors = {};
    // Connect times (from the start of the TCP connect to the 101), successful ones only.
    const connectHist = new Uint32Array(BUCKETS);
    let maxConnectUs = 0;
    let failed = 0;
    let next = 0;
    const worker = async () => {
      while (next < this.conns.length) {
        const conn = this.conns[next++];
        const begun = nowUs();
        try {
          await this.openOne(command.url, conn, timeoutMs);
          const took = nowUs() - begun;
          connectHist[bucketOf(took)] += 1;
          if (took > maxConnectUs) maxConnectUs = took;
        } catch (err) {
          failed += 1;
          const key = String(err && err.message ? err.message : err).slice(0, 120);
          errors[key] = (errors[key] || 0) + 1;
        }
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));
    const cpu = process.cpuUsage(cpuStart);
    reply({
      ev: "opened",
      ok: this.conns.length - failed,
      failed,
      errors,
      seconds: (Date.now() - started) / 1000,
      connect_hist: sparse(connectHist),
      max_connect_us: maxConnectUs,
      cpu: (cpu.user + cpu.system) / Math.max(1, nowUs() - wallStart),
    });
  }

  openOne(url, conn, timeoutMs) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url + conn.path, {
        ...(conn.source ? { localAddress: conn.source } : {}),
        perMessageDeflate: false,
        // The harness checks every message's content itself (readInts); the servers
        // under test are not being tested for UTF-8 validity here.
        skipUTF8Validation: true,
        handshakeTimeout: timeoutMs,
        maxPayload: 16 * 1024 * 1024,
      });
      conn.ws = ws;
      let settled = false;
      ws.on("open", () => {
        conn.open = true;
        settled = true;
        resolve();
      });
      ws.on("message", (data, isBinary) => this.onMessage(conn, data, isBinary));
      ws.on("error", (err) => {
        if (!settled) {
          settled = true;
          reject(err);
        }
      });
      ws.on("close", (code) => {
        conn.closeCode = code;
        if (conn.open) {
          this.closes[code] = (this.closes[code] || 0) + 1;
        }
        conn.open = false;
        if (!settled) {
          settled = true;
          reject(new Error(`closed with ${code} during the handshake`));
        }
      });
    });
  }

  // Open again the connections the server closed (a step that overloaded it may have
  // closed slow consumers), so that the next step starts with every member present.
  async reopenClosed(command) {
    const closed = this.conns.filter((conn) => !conn.open);
    const timeoutMs = (command.timeout || 30) * 1000;
    let failed = 0;
    for (const conn of closed) {
      conn.lastSeq.fill(-1);
      try {
        await this.openOne(command.url, conn, timeoutMs);
      } catch (err) {
        failed += 1;
      }
    }
    reply({ ev: "reopened", reopened: closed.length - failed, failed });
  }

  closeAll() {
    for (const conn of this.conns) {
      if (conn.ws && conn.open) conn.ws.close(1000);
      else if (conn.ws) conn.ws.terminate();
    }
  }

  // Receiving -----------------------------------------------------------------------

  onMessage(conn, data, isBinary) {
    const received = nowUs();
    if (this.mode === "echo") {
      const ints = readInts(data, 3);
      if (ints === null || isBinary) {
        this.foreign += 1;
        return;
      }
      this.onEcho(conn, ints[0], ints[2], received);
      return;
    }
    const ints = readInts(data, 5);
    if (ints === null || isBinary) {
      this.foreign += 1; // not a message this generator wrote, or altered on the way
      return;
    }
    const [step, room, member, seq, sentAt] = ints;
    if (room !== conn.room) {
      this.foreign += 1; // a message of another room: the server mixed groups up
      return;
    }
    if (step !== this.step) {
      this.late += 1;
      return;
    }
    conn.received += 1;
    const latency = received - sentAt;
    this.hist[bucketOf(latency)] += 1;
    if (latency > this.maxLatencyUs) this.maxLatencyUs = latency;
    const last = conn.lastSeq[member];
    if (seq > last + 1) this.gaps += seq - last - 1;
    else if (seq <= last) this.reorders += 1;
    if (seq > last) conn.lastSeq[member] = seq;
  }

  // Publishing ----------------------------------------------------------------------

  publish(command) {
    this.mode = "fanout";
    this.step = command.step;
    this.hist.fill(0);
    this.maxLatencyUs = 0;
    this.late = 0;
    this.gaps = 0;
    this.reorders = 0;
    this.foreign = 0;
    this.closes = {}; // per step: closes seen since this step started
    this.maxLagMs = 0;
    for (const conn of this.conns) conn.received = 0;
    this.padding = "x".repeat(Math.max(0, command.bytes - 60));
    const senders = this.conns;
    const rate = command.rate; // messages per second from this generator
    const durationUs = command.duration * 1e6;
    const sentByRoom = new Map();
    let sent = 0;
    let skipped = 0;
    let cursor = 0;
    let maxBuffered = 0;
    const cpuStart = process.cpuUsage();
    const start = nowUs();
    this.cpuStepStart = cpuStart;
    this.wallStepStart = start;
    return new Promise((resolve) => {
      const tick = () => {
        const now = nowUs();
        const elapsed = Math.min(now - start, durationUs);
        const due = Math.floor((rate * elapsed) / 1e6) - sent - skipped;
        for (let i = 0; i < due; i++) {
          let conn = null;
          for (let tries = 0; tries < senders.length; tries++) {
            const candidate = senders[cursor];
            cursor = cursor + 1 === senders.length ? 0 : cursor + 1;
            if (candidate.open) {
              conn = candidate;
              break;
            }
          }
          if (conn === null) {
            skipped += 1;
            continue;
          }
          const body =
            `{"k":${this.step},"r":${conn.room},"m":${conn.member},"q":${conn.seq},` +
            `"t":${nowUs()},"p":"${this.padding}"}`;
          conn.seq += 1;
          conn.ws.send(body);
          if (conn.ws.bufferedAmount > maxBuffered) maxBuffered = conn.ws.bufferedAmount;
          sentByRoom.set(conn.room, (sentByRoom.get(conn.room) || 0) + 1);
          sent += 1;
        }
        if (now - start >= durationUs) {
          const cpu = process.cpuUsage(cpuStart);
          const wall = nowUs() - start;
          resolve({
            ev: "published",
            step: this.step,
            sent,
            skipped,
            sent_by_room: Array.from(sentByRoom.entries()),
            cpu: (cpu.user + cpu.system) / wall,
            seconds: wall / 1e6,
            max_buffered: maxBuffered,
          });
          return;
        }
        setTimeout(tick, TICK_MS);
      };
      tick();
    });
  }

  poll() {
    let received = 0;
    let open = 0;
    for (const conn of this.conns) {
      received += conn.received;
      if (conn.open) open += 1;
    }
    const cpu = process.cpuUsage();
    return {
      ev: "poll",
      step: this.step,
      received,
      open,
      closes: this.closes,
      cpu_seconds: (cpu.user + cpu.system) / 1e6,
    };
  }

  collect() {
    const cpu = process.cpuUsage(this.cpuStepStart);
    const wall = nowUs() - this.wallStepStart;
    return {
      ev: "collected",
      step: this.step,
      received: this.conns.map((conn) => conn.received),
      rooms: this.conns.map((conn) => conn.room),
      open: this.conns.filter((conn) => conn.open).length,
      hist: sparse(this.hist),
      max_latency_us: this.maxLatencyUs,
      late: this.late,
      gaps: this.gaps,
      reorders: this.reorders,
      foreign: this.foreign,
      closes: this.closes,
      max_loop_lag_ms: Math.round(this.maxLagMs * 10) / 10,
      cpu_total: (cpu.user + cpu.system) / wall,
    };
  }

  // Echo: closed loop, one message in flight per connection --------------------------

  echo(command) {
    this.mode = "echo";
    this.hist.fill(0);
    this.maxLatencyUs = 0;
    this.echoCount = 0;
    this.foreign = 0;
    this.closes = {};
    this.padding = "x".repeat(Math.max(0, command.bytes - 40));
    this.echoRunning = true;
    const cpuStart = process.cpuUsage();
    const start = nowUs();
    for (const conn of this.conns) if (conn.open) this.sendEcho(conn);
    return new Promise((resolve) => {
      setTimeout(() => {
        this.echoRunning = false;
        const wall = nowUs() - start;
        const cpu = process.cpuUsage(cpuStart);
        resolve({
          ev: "echoed",
          round_trips: this.echoCount,
          seconds: wall / 1e6,
          hist: sparse(this.hist),
          max_latency_us: this.maxLatencyUs,
          foreign: this.foreign,
          closes: this.closes,
          open: this.conns.filter((conn) => conn.open).length,
          cpu: (cpu.user + cpu.system) / wall,
        });
      }, command.duration * 1000);
    });
  }

  sendEcho(conn) {
    conn.ws.send(`{"e":${conn.id},"q":${conn.seq},"t":${nowUs()},"p":"${this.padding}"}`);
    conn.seq += 1;
  }

  onEcho(conn, id, sentAt, received) {
    if (id !== conn.id) {
      this.foreign += 1;
      return;
    }
    if (!this.echoRunning) return;
    this.echoCount += 1;
    const latency = received - sentAt;
    this.hist[bucketOf(latency)] += 1;
    if (latency > this.maxLatencyUs) this.maxLatencyUs = latency;
    if (conn.open) this.sendEcho(conn);
  }
}

function main() {
  const generator = new Generator();
  const input = readline.createInterface({ input: process.stdin });
  input.on("line", async (line) => {
    if (!line.trim()) return;
    const command = JSON.parse(line);
    switch (command.cmd) {
      case "open":
        await generator.openAll(command);
        break;
      case "reopen":
        await generator.reopenClosed(command);
        break;
      case "publish":
        reply(await generator.publish(command));
        break;
      case "poll":
        reply(generator.poll());
        break;
      case "collect":
        reply(generator.collect());
        break;
      case "echo":
        reply(await generator.echo(command));
        break;
      case "close":
        generator.closeAll();
        reply({ ev: "closed" });
        setTimeout(() => process.exit(0), 200);
        break;
      default:
        reply({ ev: "error", error: `unknown command ${command.cmd}` });
    }
  });
  // The harness going away (also on Ctrl-C) closes stdin: stop at once.
  input.on("close", () => {
    generator.closeAll();
    setTimeout(() => process.exit(0), 100);
  });
}

main();
