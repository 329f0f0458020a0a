/*
 * django-ws in the browser: a websocket that reconnects and catches up.
 *
 * The server side sends each group event with its position
 * (`self.group_position(group)`) and joins with `since=` on reconnect; this keeps the
 * last position it saw and hands it back as `?since=` when it reconnects, with
 * exponential backoff and jitter. Messages are JSON objects:
 *
 *   - one with a "position" key moves the position on;
 *   - one with a "gap" key means events were missed and cannot be replayed (the
 *     server's `group.gap` event): reload the state it shows, e.g. the last messages.
 *
 *   const socket = new DjangoWebSocket("/ws/chat/lobby/", {
 *     onmessage(message) { ... },          // every message (parsed JSON)
 *     ongap(message) { ... },              // a gap: reload
 *     onstatus(status, detail) { ... },    // "open", "closed", "reconnecting"
 *   });
 *   socket.send("hello");
 *
 * A relative path is resolved against the page's own host (ws: or wss: as the page).
 */
(function (global) {
  "use strict";

  const FIRST_DELAY_MS = 250;
  const MAX_DELAY_MS = 10000;

  class DjangoWebSocket {
    constructor(path, handlers = {}) {
      this.path = path;
      this.handlers = handlers;
      this.position = handlers.position || null;
      this.attempt = 0;
      this.closedByUs = false;
      this.pending = [];
      this.connect();
    }

    url() {
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      const base = /^wss?:/.test(this.path) ? this.path : `${scheme}//${location.host}${this.path}`;
      if (!this.position) return base;
      const joiner = base.includes("?") ? "&" : "?";
      return `${base}${joiner}since=${encodeURIComponent(this.position)}`;
    }

    connect() {
      const socket = (this.socket = new WebSocket(this.url()));
      socket.onopen = () => {
        this.attempt = 0;
        this.status("open");
        for (const data of this.pending.splice(0)) socket.send(data);
      };
      socket.onmessage = (event) => {
        const message = JSON.parse(event.data);
        if (message.position) this.position = message.position;
        if ("gap" in message) {
          if (this.handlers.ongap) this.handlers.ongap(message);
          return;
        }
        if (this.handlers.onmessage) this.handlers.onmessage(message);
      };
      socket.onclose = (event) => {
        if (this.closedByUs) {
          this.status("closed", event.code);
          return;
        }
        const delay = Math.min(MAX_DELAY_MS, FIRST_DELAY_MS * 2 ** this.attempt);
        this.attempt += 1;
        const wait = delay / 2 + (Math.random() * delay) / 2;
        this.status("reconnecting", { code: event.code, inMs: Math.round(wait) });
        setTimeout(() => this.connect(), wait);
      };
    }

    status(status, detail) {
      if (this.handlers.onstatus) this.handlers.onstatus(status, detail);
    }

    /* Send now, or as soon as the connection is open again. */
    send(data) {
      if (this.socket.readyState === WebSocket.OPEN) this.socket.send(data);
      else this.pending.push(data);
    }

    close(code = 1000) {
      this.closedByUs = true;
      this.socket.close(code);
    }
  }

  global.DjangoWebSocket = DjangoWebSocket;
})(typeof window !== "undefined" ? window : globalThis);
