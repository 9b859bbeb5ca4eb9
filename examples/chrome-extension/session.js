// One call's connection to /ws/session, as the demo page (presales_ws/static/demo.js) keeps it, without a page:
// everything it learns goes out as events ({type: "phase" | "notice" | "heartbeat" | "transcript" |
// "suggestion" | "marker" | "error" | "ended", ...}) for the offscreen document to record and broadcast.
// A broken connection resumes the same session (docs/PROTOCOL.md, "Resume"): the audio no final covers yet is
// kept in lib/resend.js's buffer (the demo's, copied by sync-capture.sh) and sent again from `received_s`.

import { TARGET_SAMPLE_RATE_HZ } from "./lib/capture.js";
import { MAX_RESEND_S, ResendBuffer } from "./lib/resend.js";

const SUBPROTOCOL = "presales.v1";
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 8000;
// A new session (one that could not be resumed) takes this much of the audio kept: 4 s, inside the server's 5 s
// burst. A resumed one takes all the server lacks (up to resend.js's 30 s): the server allows that resend.
const MAX_NEW_SESSION_BACKLOG_S = 4;
const STOP_TIMEOUT_MS = 35000; // the server gives its transcriber 30 s to return the last finals
// Closes that another attempt would only repeat: say why and stop (docs/PROTOCOL.md, "Close codes").
const FATAL_CLOSES = new Map([
  [1000, "the server ended the session"],
  [4400, "the server refused the session parameters"],
  [4401, "the API key is missing or not valid: set it in the extension's options"],
  [4403, "this extension's origin is not in the server's ALLOWED_ORIGINS"],
  [4429, "too much audio, or too many sessions for this key"],
  [4409, "another connection (a window, a second extension) resumed this session"],
]);

export class CallSession {
  /** `emit(event)` hears everything; `connect()` opens the socket; `sendAudio` may be called before it is ready. */
  constructor({ url, key, channels, channelRoles }, emit) {
    this.url = new URL(url);
    this.channels = channels;
    this.url.searchParams.set("sample_rate", String(TARGET_SAMPLE_RATE_HZ));
    this.url.searchParams.set("channels", String(channels));
    if (channels === 2) this.url.searchParams.set("channel_roles", channelRoles);
    // A browser cannot set headers on a WebSocket: the key rides as a second subprotocol (never echoed back).
    this.protocols = key ? [SUBPROTOCOL, `key.${key}`] : [SUBPROTOCOL];
    this.emit = emit;
    this.ws = null;
    this.ready = false;
    this.stopping = false;
    this.ended = false;
    this.attempt = 0;
    this.reconnectTimer = null;
    this.resend = new ResendBuffer(TARGET_SAMPLE_RATE_HZ, channels); // audio not yet covered by a final
    this.resumeToken = null;
    this.finalsEnd = []; // per channel: the `end` of the last final received
    this.sessionId = null;
    this.resolveClosed = null;
    this.allFinals = false;
  }

  connect() {
    this.reconnectTimer = null;
    this.emit({ type: "phase", phase: this.attempt ? "reconnecting" : "connecting", text: this.attempt ? "reconnecting…" : "connecting…" });
    const url = new URL(this.url);
    if (this.resumeToken) {
      // The same session, if the server still has it: its `ready` says how much audio it holds (`received_s`).
      url.searchParams.set("resume", this.resumeToken);
      const ends = Array.from({ length: this.channels }, (_, channel) => (this.finalsEnd[channel] ?? 0).toFixed(3));
      url.searchParams.set("finals_end", ends.join(","));
    }
    const ws = new WebSocket(url, this.protocols);
    ws.binaryType = "arraybuffer";
    ws.onmessage = (event) => this.receive(ws, event);
    ws.onclose = (event) => this.closed(ws, event);
    this.ws = ws;
    this.ready = false;
  }

  sendAudio(pcm) {
    if (this.ended) return;
    this.resend.sent(pcm); // kept until a final covers it: sent (again) at the next `ready`
    if (this.ready && this.ws.readyState === WebSocket.OPEN) this.ws.send(pcm);
  }

  send(message) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
  }

  receive(ws, event) {
    if (ws !== this.ws || typeof event.data !== "string") return;
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      this.emit({ type: "error", code: "client", message: "the server sent a frame that is not JSON" });
      return;
    }
    switch (message.type) {
      case "transcript":
        if (message.is_final) {
          this.finalsEnd[message.channel] = Math.max(message.end, this.finalsEnd[message.channel] ?? 0);
          this.resend.final(message.channel, message.end);
        }
        this.emit({ type: "transcript", message });
        break;
      case "suggestion":
        this.emit({ type: "suggestion", message });
        break;
      case "ping":
        this.send({ type: "pong", ts: message.ts ?? null });
        this.emit({ type: "heartbeat", at: Date.now() });
        break;
      case "error":
        this.emit({ type: "error", code: message.code, message: message.message });
        break;
      case "status":
        this.status(message);
        break;
      default:
        break; // pong and future types
    }
  }

  status(message) {
    if (message.state === "ready") {
      this.ready = true;
      const reconnected = this.attempt > 0;
      this.attempt = 0;
      const channels = message.channels === 2 ? "2 channels" : "1 channel";
      this.emit({ type: "phase", phase: "live", text: `live: ${message.transcriber}, ${channels}`, session: message.session_id });
      let from = message.received_s ?? 0;
      let notice = "";
      if (reconnected && message.resumed) {
        this.emit({ type: "marker", text: `resumed (same session ${message.session_id}): nothing lost` });
      } else if (reconnected || this.sessionId !== null) {
        // A new session: the old one's words in flight are gone; its last seconds of audio start this one.
        this.emit({ type: "marker", text: `reconnected (new session ${message.session_id})` });
        const kept = Math.min(this.resend.samples / TARGET_SAMPLE_RATE_HZ, MAX_NEW_SESSION_BACKLOG_S);
        notice = `the server could not resume the session: a new one starts with the last ${kept.toFixed(1)} s of audio`;
        this.finalsEnd = [];
        this.resend.restart(MAX_NEW_SESSION_BACKLOG_S);
        from = 0;
      }
      this.emit({ type: "notice", text: notice });
      this.sessionId = message.session_id;
      this.resumeToken = message.resume_token ?? null;
      for (const pcm of this.resend.since(from)) this.ws.send(pcm);
      if (this.stopping) this.send({ type: "stop" });
    } else if (message.state === "closed") {
      this.allFinals = true;
      this.resolveClosed?.();
    } else if (message.state === "reconnecting" || message.state === "recovered") {
      const text = message.state === "reconnecting" ? `the transcriber is reconnecting (${message.reason || "no reason given"}); audio is kept` : "";
      this.emit({ type: "notice", text });
    } else if (message.state === "closing") {
      this.emit({ type: "notice", text: `the server is closing this session (${message.reason || "no reason given"}); it will reconnect` });
    } else if (message.state === "roles") {
      const roles = Object.entries(message.roles || {}).map(([id, role]) => `#${id} ${role}`);
      this.emit({ type: "marker", text: `roles: ${roles.join(", ")}` });
    }
  }

  closed(ws, event) {
    if (ws !== this.ws) return;
    this.ready = false;
    const why = event.reason ? `${event.code} ${event.reason}` : String(event.code);
    if (this.stopping) {
      this.resolveClosed?.();
      return;
    }
    const fatal = FATAL_CLOSES.get(event.code);
    if (fatal) {
      this.emit({ type: "error", code: `close ${event.code}`, message: fatal });
      this.emit({ type: "phase", phase: "failed", text: `closed (${why})` });
      this.end();
      return;
    }
    this.attempt += 1;
    const backoff = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (this.attempt - 1));
    const delay = event.code === 1012 && this.attempt === 1 ? 0 : backoff * (0.5 + Math.random() / 2);
    this.emit({ type: "phase", phase: "reconnecting", text: `disconnected (${why})` });
    this.emit({
      type: "notice",
      text: `connection lost (close ${why}); reconnecting in ${(delay / 1000).toFixed(1)} s, attempt ${this.attempt}; audio is kept for ${MAX_RESEND_S} s`,
    });
    this.emit({ type: "marker", text: `connection lost (close ${why})` });
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  /** Send `stop` (after the capture's last frame) and wait for `status: closed`, so the last sentence is kept. */
  async stop() {
    if (this.stopping || this.ended) return;
    this.stopping = true;
    this.emit({ type: "phase", phase: "stopping", text: "stopping: waiting for the last finals…" });
    const closed = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
    if (this.ready) {
      this.send({ type: "stop" });
    } else if (this.reconnectTimer !== null) {
      clearTimeout(this.reconnectTimer);
      this.connect(); // `stop` follows the resent audio once the session is ready again
    }
    const timedOut = await Promise.race([
      closed.then(() => false),
      new Promise((resolve) => setTimeout(() => resolve(true), STOP_TIMEOUT_MS)),
    ]);
    if (!this.allFinals) {
      const why = timedOut ? "no `closed` status within 35 s of stop" : "the connection dropped while stopping";
      this.emit({ type: "error", code: "client", message: `${why}: the last finals may be missing` });
    }
    this.ws?.close(1000);
    this.emit({ type: "phase", phase: "idle", text: this.allFinals ? "closed" : "stopped" });
    this.emit({ type: "notice", text: "" });
    this.end();
  }

  end() {
    if (this.ended) return;
    this.ended = true;
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.emit({ type: "ended" });
  }
}
