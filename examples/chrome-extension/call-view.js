// Drawing a call: the transcript (finals by role, one interim per channel, rewritten in place) and the
// suggestion cards (one per question; a partial card is replaced in place as the answer streams).

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function role(message) {
  return ["customer", "consultant"].includes(message.speaker) ? message.speaker : "unknown";
}

export class TranscriptView {
  constructor(root) {
    this.root = root;
    this.interims = new Map();
  }

  clear() {
    this.root.replaceChildren();
    this.interims.clear();
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
    for (const line of this.interims.values()) line.remove();
    this.interims.clear();
    this.root.append(element("div", "line marker", text));
  }

  firstInterim() {
    return [...this.root.children].find((line) => line.classList.contains("interim")) || null;
  }

  fill(line, message, kind) {
    const speaker = role(message);
    line.className = `line ${kind} ${speaker}`;
    line.dataset.channel = String(message.channel);
    const who = message.speaker_id === null || message.speaker_id === undefined ? speaker : `${speaker} #${message.speaker_id}`;
    line.replaceChildren(
      element("span", "role", who),
      element("span", "time", `${message.start.toFixed(1)} s`),
      element("span", "text", kind === "interim" ? `${message.text} …` : message.text),
    );
  }
}

export class SuggestionCards {
  constructor(root) {
    this.root = root;
    this.cards = new Map(); // question -> card
  }

  clear() {
    this.cards.clear();
    this.root.replaceChildren(element("p", "empty", "none yet"));
  }

  show(message) {
    this.root.querySelector(".empty")?.remove();
    const card = this.cards.get(message.question) || element("div");
    card.className = message.partial ? "card partial" : "card";
    const meta = [`confidence ${Math.round(message.confidence * 100)}%`];
    if (message.source) meta.push(`from ${message.source}`);
    if (message.speaker === "unknown") meta.push("speaker not known yet");
    if (message.partial) meta.push("answering…");
    else if (message.latency_ms !== undefined && message.latency_ms !== null) meta.push(`${Math.round(message.latency_ms)} ms`);
    card.replaceChildren(
      element("div", "question", message.question),
      element("div", "response", message.response),
      element("div", "meta", meta.join(" · ")),
    );
    if (!this.cards.has(message.question)) {
      this.cards.set(message.question, card);
      this.root.prepend(card);
    }
  }
}

export class ErrorList {
  static MAX_SHOWN = 20;

  constructor(root) {
    this.root = root;
  }

  clear() {
    this.root.replaceChildren();
  }

  show(code, message, at = Date.now()) {
    const item = element("li");
    item.append(element("strong", null, code), ` ${message} `, element("span", "time", new Date(at).toLocaleTimeString()));
    this.root.prepend(item);
    while (this.root.children.length > ErrorList.MAX_SHOWN) this.root.lastElementChild.remove();
  }
}

/** The one-line description of what is being captured, from a `capture` event. */
export function describeCapture(event) {
  if (event.channels === 1) return "capturing: microphone only";
  const other = event.microphoneRole === "customer" ? "consultant" : "customer";
  const through = event.playThrough ? "; the tab stays audible to you" : "; the tab's sound could not be played back";
  return `capturing: microphone (${event.microphoneRole}) + this tab (${other})${through}`;
}
