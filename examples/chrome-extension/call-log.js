// What the views need to redraw a call from nothing: every event worth keeping, numbered, broadcast as it
// happens. Finals, suggestions, markers and errors are kept (up to MAX_KEPT_EVENTS); of the passing ones
// (state, notice, heartbeat, one interim per channel) only the latest. A view opened mid-call replays them.

import { TO_VIEWS } from "./messages.js";

const MAX_KEPT_EVENTS = 3000; // about two hours of a busy call's finals

/** The key an event replaces, or null when it is kept alongside the others. */
function slot(event) {
  switch (event.type) {
    case "phase":
    case "notice":
    case "heartbeat":
    case "capture":
    case "ended":
      return event.type;
    case "transcript":
      return event.message.is_final ? null : `interim:${event.message.channel}`;
    case "suggestion":
      // A partial suggestion is replaced by the next one for the same question, and by its final.
      return `suggestion:${event.message.question}`;
    default:
      return null;
  }
}

export class CallLog {
  constructor() {
    this.id = crypto.randomUUID();
    this.seq = -1;
    this.kept = new Map(); // key -> numbered message, in the order a view should replay them
  }

  /** Keep `event`, number it, and send it to every open view. */
  record(event) {
    this.seq += 1;
    event = { ...event, at: event.at ?? Date.now() };
    const message = { target: TO_VIEWS, log: this.id, seq: this.seq, event };
    if (event.type === "reset") this.kept.clear();
    if (event.type === "transcript" && event.message.is_final) this.kept.delete(`interim:${event.message.channel}`);
    const key = slot(event) ?? `#${this.seq}`;
    this.kept.delete(key); // a replaced event moves to the end
    this.kept.set(key, message);
    for (const oldest of this.kept.keys()) {
      if (this.kept.size <= MAX_KEPT_EVENTS) break;
      this.kept.delete(oldest);
    }
    chrome.runtime.sendMessage(message).catch(() => {}); // no view open: nobody to tell
  }

  snapshot() {
    return { events: [...this.kept.values()] };
  }
}
