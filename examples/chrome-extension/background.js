// The service worker: the only part that may ask for a tab's audio (chrome.tabCapture) and create the
// offscreen document. It holds no state of the call, since Chrome stops idle service workers; the offscreen
// document does.

import { TO_BACKGROUND, TO_OFFSCREEN } from "./messages.js";
import { loadSettings, serverUrlProblem } from "./settings.js";

const OFFSCREEN_URL = "offscreen.html";
const PERMISSION_URL = "permission.html";
let creating = null; // one createDocument at a time: a second call while the first runs would throw

async function offscreenExists() {
  const contexts = await chrome.runtime.getContexts({ contextTypes: ["OFFSCREEN_DOCUMENT"] });
  return contexts.length > 0;
}

async function ensureOffscreen() {
  if (await offscreenExists()) return;
  creating ??= chrome.offscreen
    .createDocument({
      url: OFFSCREEN_URL,
      reasons: ["USER_MEDIA"],
      justification: "Captures the microphone and the call's tab and streams them to the presales-ws server.",
    })
    .finally(() => {
      creating = null;
    });
  await creating;
}

function toOffscreen(type, fields = {}) {
  return chrome.runtime.sendMessage({ target: TO_OFFSCREEN, type, ...fields });
}

function refusal(code, message) {
  return { ok: false, error: { code, message } };
}

async function start(tabId) {
  const settings = await loadSettings();
  const problem = serverUrlProblem(settings.serverUrl);
  if (problem) return refusal("options", `the server URL ${problem}: set it in the extension's options`);
  if ((await offscreenExists()) && (await toOffscreen("snapshot")).running) {
    return refusal("busy", "a call is already running: stop it first");
  }
  let streamId = null;
  if (settings.tabAudio) {
    if (tabId === null || tabId === undefined) return refusal("tab_capture", "no tab to capture");
    try {
      // Chrome allows this only after the user invoked the extension on that tab (clicked its icon there).
      streamId = await chrome.tabCapture.getMediaStreamId({ targetTabId: tabId });
    } catch (error) {
      return refusal("tab_capture", `${error.message} Click the extension's icon while on the call's tab, then Start.`);
    }
  }
  await ensureOffscreen();
  const result = await toOffscreen("start", { settings, streamId });
  // An offscreen document cannot show the permission prompt: a tab of our own asks once, for the extension.
  if (result.reason === "NotAllowedError") await chrome.tabs.create({ url: PERMISSION_URL });
  return result;
}

async function handle(message) {
  switch (message.type) {
    case "start":
      return start(message.tabId);
    case "stop":
      return (await offscreenExists()) ? toOffscreen("stop") : { ok: true };
    case "snapshot":
      return (await offscreenExists()) ? toOffscreen("snapshot") : null;
    default:
      return refusal("extension", `unknown request ${JSON.stringify(message.type)}`);
  }
}

chrome.runtime.onMessage.addListener((message, _sender, reply) => {
  if (message.target !== TO_BACKGROUND) return false;
  handle(message).then(reply, (error) => reply(refusal("extension", String(error?.message || error))));
  return true;
});
