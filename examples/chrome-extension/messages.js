// The message contract between the extension's parts. Views (popup, side panel) ask the service worker; the
// service worker drives the offscreen document, which owns the call; the offscreen document broadcasts every
// change of the call to the views as a numbered event. Only chrome.runtime is available to an offscreen
// document, so this is all plain runtime messaging.

export const TO_BACKGROUND = "background";
export const TO_OFFSCREEN = "offscreen";
export const TO_VIEWS = "views";

/** Ask the service worker: "start" (with `tabId`), "stop" or "snapshot". */
export async function ask(type, fields = {}) {
  return chrome.runtime.sendMessage({ target: TO_BACKGROUND, type, ...fields });
}

/** The tab the user is looking at in this view's window: the call's tab, for a side panel or a popup. */
export async function activeTabId() {
  const [tab] = await chrome.tabs.query({ active: true, currentWindow: true });
  return tab ? tab.id : null;
}

/**
 * Every call event, in order: first the snapshot of the call so far (so a view opened mid-call, or reopened,
 * shows the whole transcript), then live events. Events that race the snapshot are told apart by number.
 */
export async function followCall(apply) {
  let seen = null; // the snapshot's last event number, once it is in
  let log = null; // which offscreen document numbered them (a new document counts from 0 again)
  const early = [];
  const take = (message) => {
    if (message.log !== log) {
      log = message.log;
      seen = -1;
    }
    if (message.seq <= seen) return;
    seen = message.seq;
    apply(message.event);
  };
  chrome.runtime.onMessage.addListener((message) => {
    if (message.target !== TO_VIEWS) return false;
    if (seen === null) early.push(message);
    else take(message);
    return false;
  });
  const snapshot = await ask("snapshot").catch(() => null);
  seen = -1;
  if (snapshot) for (const message of snapshot.events) take(message);
  for (const message of early) take(message);
}
