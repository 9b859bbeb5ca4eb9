// The side panel: the call as the consultant follows it. It owns nothing: closing it leaves the call running
// in the offscreen document, and opening it again replays the call so far (messages.js, followCall).

import { ErrorList, SuggestionCards, TranscriptView, describeCapture } from "./call-view.js";
import { activeTabId, ask, followCall } from "./messages.js";

const $ = (id) => document.getElementById(id);
const RUNNING_PHASES = new Set(["connecting", "live", "reconnecting", "stopping"]);

const transcript = new TranscriptView($("transcript"));
const suggestions = new SuggestionCards($("suggestions"));
const errors = new ErrorList($("errors"));

function setRunning(running) {
  $("start").disabled = running;
  $("stop").disabled = !running;
}

function say(text) {
  $("notice").hidden = !text;
  $("notice").textContent = text || "";
}

function apply(event) {
  switch (event.type) {
    case "reset":
      transcript.clear();
      suggestions.clear();
      errors.clear();
      $("capture").textContent = "";
      $("heartbeat").textContent = "";
      say("");
      break;
    case "phase":
      $("status").className = `pill ${event.phase}`;
      $("status").textContent = event.text || event.phase;
      setRunning(RUNNING_PHASES.has(event.phase));
      break;
    case "notice":
      say(event.text);
      break;
    case "heartbeat":
      $("heartbeat").textContent = `last heartbeat ${new Date(event.at).toLocaleTimeString()}`;
      break;
    case "capture":
      $("capture").textContent = describeCapture(event);
      break;
    case "transcript":
      transcript.show(event.message);
      break;
    case "suggestion":
      suggestions.show(event.message);
      break;
    case "marker":
      transcript.marker(event.text);
      break;
    case "error":
      errors.show(event.code, event.message, event.at);
      break;
    default:
      break; // "ended", and events of later versions
  }
}

/** Errors the service worker met before any call began (no tab access, no options) come back as the reply. */
function showRefusal(reply) {
  if (reply?.error) errors.show(reply.error.code, reply.error.message);
}

$("start").addEventListener("click", async () => {
  $("start").disabled = true;
  const reply = await ask("start", { tabId: await activeTabId() });
  showRefusal(reply);
  if (!reply?.ok) $("start").disabled = false;
});

$("stop").addEventListener("click", async () => {
  $("stop").disabled = true;
  showRefusal(await ask("stop"));
});

followCall(apply);
