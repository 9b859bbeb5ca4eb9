// The demo page's UI: one live session on /ws/session, fed by capture.js. Capture knows nothing of the
// socket or the page; this file knows nothing of audio beyond "an ArrayBuffer every 20 ms".

import { AudioCapture, TARGET_SAMPLE_RATE_HZ, openMicrophone, openTabAudio } from "./capture.js";
import { ResendBuffer } from "./resend.js";

const SUBPROTOCOL = "presales.v1";
const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 8000;
// A new session (one that could not be resumed) takes this much of the audio kept: 4 s, inside the server's 5 s
// burst. A resumed one takes all the server lacks (up to resend.js's 30 s): the server allows that resend.
const MAX_NEW_SESSION_BACKLOG_S = 4;
const STOP_TIMEOUT_MS = 35000; // the server gives its transcriber 30 s to return the last finals
const MAX_ERRORS_SHOWN = 20;
const OPUS_MIME = "audio/webm;codecs=opus"; // what Chrome's MediaRecorder writes
const OPUS_BITS_PER_S = 32000;
const RECORDER_TIMESLICE_MS = 250; // a piece of the recording every 250 ms
// Closes that another attempt would only repeat: say why and stop (docs/PROTOCOL.md, "Close codes").
const FATAL_CLOSES = new Map([
  [1000, "the server ended the session"],
  [4400, "the server refused the session parameters"],
  [4401, "the API key is missing or not valid"],
  [4403, "this page's origin may not open sessions"],
  [4429, "too much audio, or too many sessions for this key"],
  [4409, "another connection (a tab, a window) resumed this session"],
]);
const CHANNEL_NAMES = [["microphone"], ["microphone (consultant)", "tab audio (customer)"]];

const $ = (id) => document.getElementById(id);

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Transcript lines: one interim per channel, rewritten in place; finals stay, in arrival order. */
class TranscriptView {
  constructor(root) {
    this.root = root;
    this.interims = new Map();
  }

  show(message) {
    const open = this.interims.get(message.channel);
    if (!message.is_final) {
      const line = open || element("div");
      this.fill(line, message, "interim");
      if (!open) {
        this.interims.set(message.channel, line);
        this.root.append(line);
      }
    } else {
      if (open) {
        open.remove();
        this.interims.delete(message.channel);
      }
      if (!message.text) return; // an empty final only clears the interim (docs/PROTOCOL.md)
      const line = element("div");
      this.fill(line, message, "final");
      this.root.insertBefore(line, this.firstInterim());
    }
    this.root.lastElementChild?.scrollIntoView({ block: "nearest" });
  }

  marker(text) {
    this.dropInterims();
    this.root.append(element("div", "line marker", text));
  }

  dropInterims() {
    for (const line of this.interims.values()) line.remove();
    this.interims.clear();
  }

  firstInterim() {
    return [...this.root.children].find((line) => line.classList.contains("interim")) || null;
  }

  fill(line, message, kind) {
    const speaker = ["customer", "consultant"].includes(message.speaker) ? message.speaker : "unknown";
    line.className = `line ${kind} ${speaker}`;
    line.dataset.channel = String(message.channel);
    const who = message.speaker_id === null || message.speaker_id === undefined ? speaker : `${speaker} #${message.speaker_id}`;
    line.replaceChildren(
      element("span", "role", who),
      element("span", "time", `${message.start.toFixed(2)}–${message.end.toFixed(2)} s`),
      element("span", "text", kind === "interim" ? `${message.text} …` : message.text),
    );
  }
}

/** Everything on the page that is not the transcript. */
class Page {
  constructor() {
    this.status = $("status");
    this.heartbeatLine = $("heartbeat");
    this.notice = $("notice");
    this.errors = $("errors");
    this.suggestions = $("suggestions");
    this.cards = new Map(); // "channel:start:end" of a question -> its card
    this.meters = $("meters");
    this.transcript = new TranscriptView($("transcript"));
    $("url").value = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/session`;
  }

  setStatus(state, text) {
    this.status.className = `pill ${state}`;
    this.status.textContent = text || state;
  }

  say(text) {
    this.notice.hidden = !text;
    this.notice.textContent = text || "";
  }

  error(code, message) {
    const item = element("li");
    item.append(element("strong", null, code), ` ${message} `, element("span", "time", new Date().toLocaleTimeString()));
    this.errors.prepend(item);
    while (this.errors.children.length > MAX_ERRORS_SHOWN) this.errors.lastElementChild.remove();
  }

  heartbeat() {
    this.heartbeatLine.textContent = `last heartbeat ${new Date().toLocaleTimeString()}`;
  }

  /**
   * One card per question. A streaming answer comes as `partial` messages, each holding the response so far:
   * the card is rewritten in place, then settled by the complete one (or removed if the stream broke).
   */
  suggestion(message) {
    this.suggestions.querySelector(".empty")?.remove();
    const key = `${message.channel}:${message.start}:${message.end}`;
    let card = this.cards.get(key);
    if (!message.partial && !message.response) {
      card?.remove();
      this.cards.delete(key);
      return;
    }
    if (!card) {
      card = element("div", "card");
      this.cards.set(key, card);
      this.suggestions.prepend(card);
    }
    const meta = [`confidence ${Math.round(message.confidence * 100)}%`];
    if (message.source) meta.push(`from ${message.source}`);
    if (message.speaker === "unknown") meta.push("speaker not known yet");
    if (message.partial) meta.push("writing…");
    else if (message.latency_ms !== undefined && message.latency_ms !== null) meta.push(`${Math.round(message.latency_ms)} ms`);
    card.classList.toggle("writing", Boolean(message.partial));
    card.replaceChildren(
      element("div", "question", message.question),
      element("div", "response", message.response),
      element("div", "meta", meta.join(" · ")),
    );
  }

  showMeters(names) {
    this.meters.replaceChildren(
      ...names.map((name) => {
        const row = element("div", "meter");
        const bar = element("div", "bar");
        bar.append(element("div", "fill"));
        row.append(element("span", null, name), bar);
        return row;
      }),
    );
  }

  levels(values) {
    const fills = this.meters.querySelectorAll(".fill");
    values.forEach((rms, index) => {
      const db = 20 * Math.log10(Math.max(rms, 1e-6));
      const percent = Math.max(0, Math.min(100, ((db + 60) / 60) * 100)); // -60 dBFS .. 0 dBFS
      if (fills[index]) fills[index].style.width = `${percent.toFixed(0)}%`;
    });
  }

  running(on) {
    $("start").disabled = on;
    $("stop").disabled = !on;
    for (const id of ["url", "key", "tab-audio", "compressed"]) $(id).disabled = on;
  }
}

/** Two sources as one stereo stream (microphone left, tab right), for a recorder: it records one stream. */
function stereoOf(streams) {
  const ctx = new AudioContext();
  const merger = ctx.createChannelMerger(2);
  streams.forEach((stream, channel) => ctx.createMediaStreamSource(stream).connect(merger, 0, channel));
  const destination = ctx.createMediaStreamDestination();
  destination.channelCount = 2;
  merger.connect(destination);
  return { stream: destination.stream, close: () => ctx.close() };
}

/** One call: capture, a socket (replaced after a drop, with backoff), and an orderly stop. */
class LiveSession {
  constructor(page, { url, key, tabAudio, compressed }) {
    this.page = page;
    this.url = url;
    this.key = key;
    this.tabAudio = tabAudio;
    // Compressed: a MediaRecorder's WebM/Opus pieces instead of PCM frames (docs/CLIENTS.md). The PCM capture
    // still runs, for the level meters only. A recording must reach a session from its first byte (its header):
    // each session gets its own recorder, started at `ready`; audio while reconnecting is not kept.
    this.compressed = compressed;
    this.recorder = null;
    this.recordSource = null;
    this.capture = null;
    this.ws = null;
    this.ready = false;
    this.stopping = false;
    this.ended = false;
    this.attempt = 0;
    this.reconnectTimer = null;
    this.resend = null; // audio not yet covered by a final (resend.js)
    this.resumeToken = null;
    this.finalsEnd = [];
    this.sessionId = null;
    this.closedPromise = null;
    this.resolveClosed = null;
    this.allFinals = false;
  }

  async start() {
    this.page.setStatus("connecting", "opening the microphone…");
    const streams = [await openMicrophone()];
    if (this.tabAudio) {
      try {
        streams.push(await openTabAudio());
      } catch (error) {
        for (const track of streams[0].getTracks()) track.stop();
        throw error;
      }
    }
    this.channels = streams.length;
    this.resend = new ResendBuffer(TARGET_SAMPLE_RATE_HZ, this.channels);
    this.page.showMeters(CHANNEL_NAMES[this.channels - 1]);
    this.capture = await AudioCapture.start(streams, {
      onFrame: (pcm) => this.compressed || this.sendAudio(pcm),
      onLevel: (levels) => this.page.levels(levels),
    });
    if (this.compressed) this.recordSource = streams.length === 1 ? { stream: streams[0], close() {} } : stereoOf(streams);
    this.connect();
  }

  startRecorder() {
    this.stopRecorder();
    const ws = this.ws;
    const recorder = new MediaRecorder(this.recordSource.stream, { mimeType: OPUS_MIME, audioBitsPerSecond: OPUS_BITS_PER_S });
    recorder.ondataavailable = (event) => {
      if (event.data.size && ws.readyState === WebSocket.OPEN) ws.send(event.data); // a Blob, sent in order
    };
    recorder.start(RECORDER_TIMESLICE_MS);
    this.recorder = recorder;
  }

  /** Resolves once the recorder's last piece is sent (`dataavailable` comes before `stop`). */
  stopRecorder() {
    const recorder = this.recorder;
    this.recorder = null;
    if (!recorder || recorder.state === "inactive") return Promise.resolve();
    return new Promise((resolve) => {
      recorder.addEventListener("stop", () => resolve(), { once: true });
      recorder.stop();
    });
  }

  connect() {
    this.reconnectTimer = null;
    const url = new URL(this.url);
    url.searchParams.set("sample_rate", String(TARGET_SAMPLE_RATE_HZ));
    url.searchParams.set("channels", String(this.channels));
    if (this.compressed) url.searchParams.set("encoding", "webm-opus");
    if (this.resumeToken && !this.compressed) {
      // The same session, if the server still has it: it says how much audio it holds (`received_s`). A recording
      // (WebM/Opus) cannot be taken up mid-stream: it starts a new session instead.
      url.searchParams.set("resume", this.resumeToken);
      const ends = Array.from({ length: this.channels }, (_, channel) => (this.finalsEnd[channel] ?? 0).toFixed(3));
      url.searchParams.set("finals_end", ends.join(","));
    }
    // Browsers cannot set headers on a WebSocket: the key rides as a second subprotocol (never echoed back).
    const protocols = this.key ? [SUBPROTOCOL, `key.${this.key}`] : [SUBPROTOCOL];
    this.page.setStatus(this.attempt ? "reconnecting" : "connecting", this.attempt ? "reconnecting…" : "connecting…");
    const ws = new WebSocket(url, protocols);
    ws.binaryType = "arraybuffer";
    ws.onmessage = (event) => this.receive(ws, event);
    ws.onclose = (event) => this.closed(ws, event);
    this.ws = ws;
    this.ready = false;
  }

  sendAudio(pcm) {
    if (this.ended) return;
    this.resend.sent(pcm); // kept until a final covers it: resent after a broken connection
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
      this.page.error("client", "the server sent a frame that is not JSON");
      return;
    }
    switch (message.type) {
      case "transcript":
        if (message.is_final) {
          this.finalsEnd[message.channel] = Math.max(message.end, this.finalsEnd[message.channel] ?? 0);
          this.resend.final(message.channel, message.end);
        }
        this.page.transcript.show(message);
        break;
      case "ping":
        this.send({ type: "pong", ts: message.ts ?? null });
        this.page.heartbeat();
        break;
      case "suggestion":
        this.page.suggestion(message);
        break;
      case "error":
        this.page.error(message.code, message.message);
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
      this.page.setStatus("live", `live: ${message.transcriber}, ${channels}`);
      let from = message.received_s ?? 0;
      if (reconnected && message.resumed) {
        this.page.transcript.marker(`resumed (same session ${message.session_id}): nothing lost`);
      } else if (reconnected || this.sessionId !== null) {
        // A new session: the old one's words in flight are gone; its recent audio starts this one.
        this.page.transcript.marker(`reconnected (new session ${message.session_id})`);
        this.finalsEnd = [];
        this.resend.restart(MAX_NEW_SESSION_BACKLOG_S);
        from = 0;
      }
      this.page.say("");
      this.sessionId = message.session_id;
      this.resumeToken = message.resume_token ?? null;
      for (const pcm of this.resend.since(from)) this.ws.send(pcm);
      if (this.stopping) this.send({ type: "stop" });
      else if (this.compressed) this.startRecorder();
    } else if (message.state === "closed") {
      this.allFinals = true;
      this.resolveClosed?.();
    } else if (message.state === "reconnecting" || message.state === "recovered") {
      this.page.say(message.state === "reconnecting" ? `the transcriber is reconnecting (${message.reason || "no reason given"}); audio is kept` : "");
    } else if (message.state === "closing") {
      this.page.say(`the server is closing this session (${message.reason || "no reason given"}); it will reconnect`);
    } else if (message.state === "roles") {
      this.page.transcript.marker(`roles: ${Object.entries(message.roles || {}).map(([id, role]) => `#${id} ${role}`).join(", ")}`);
    }
  }

  closed(ws, event) {
    if (ws !== this.ws) return;
    this.ready = false;
    this.stopRecorder();
    const why = event.reason ? `${event.code} ${event.reason}` : String(event.code);
    if (this.stopping) {
      this.resolveClosed?.();
      return;
    }
    const fatal = FATAL_CLOSES.get(event.code);
    if (fatal) {
      this.page.error(`close ${event.code}`, fatal);
      this.page.setStatus("failed", `closed (${why})`);
      this.finish();
      return;
    }
    this.attempt += 1;
    const backoff = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (this.attempt - 1));
    const delay = event.code === 1012 && this.attempt === 1 ? 0 : backoff * (0.5 + Math.random() / 2);
    this.page.setStatus("reconnecting", `disconnected (${why})`);
    this.page.say(`connection lost (close ${why}); reconnecting in ${(delay / 1000).toFixed(1)} s, attempt ${this.attempt}; audio is kept`);
    this.page.transcript.marker(`connection lost (close ${why})`);
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  /** Stop capturing, send `stop`, and wait for `status: closed` so the last sentence is not lost. */
  async stop() {
    if (this.stopping || this.ended) return;
    this.stopping = true;
    this.page.setStatus("stopping", "stopping: waiting for the last finals…");
    this.closedPromise = new Promise((resolve) => {
      this.resolveClosed = resolve;
    });
    await this.stopRecorder(); // compressed: its last piece goes out before the `stop`
    await this.capture?.stop(); // its last partial frame goes out before the `stop`
    if (this.ready) {
      this.send({ type: "stop" });
    } else if (this.reconnectTimer !== null) {
      clearTimeout(this.reconnectTimer);
      this.connect(); // `stop` follows the resent audio once the session is ready again
    }
    const timedOut = await Promise.race([
      this.closedPromise.then(() => false),
      new Promise((resolve) => setTimeout(() => resolve(true), STOP_TIMEOUT_MS)),
    ]);
    if (!this.allFinals) {
      const why = timedOut ? "no `closed` status within 35 s of stop" : "the connection dropped while stopping";
      this.page.error("client", `${why}: the last finals may be missing`);
    }
    this.ws?.close(1000);
    this.page.setStatus("idle", this.allFinals ? "closed" : "stopped");
    this.page.say("");
    this.finish();
  }

  finish() {
    this.ended = true;
    if (this.reconnectTimer !== null) clearTimeout(this.reconnectTimer);
    this.stopRecorder();
    this.capture?.stop();
    this.recordSource?.close();
    this.page.levels(new Array(this.channels || 1).fill(0));
    this.page.running(false);
    if (this.onEnd) this.onEnd();
  }
}

const page = new Page();
let session = null;

$("start").addEventListener("click", async () => {
  page.running(true);
  page.say("");
  session = new LiveSession(page, {
    url: $("url").value.trim(),
    key: $("key").value.trim(),
    tabAudio: $("tab-audio").checked,
    compressed: $("compressed").checked,
  });
  try {
    await session.start();
  } catch (error) {
    page.error(error.name || "capture", error.message);
    page.setStatus("failed", "could not start");
    session.finish();
  }
});

$("stop").addEventListener("click", () => session?.stop());
