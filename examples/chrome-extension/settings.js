// The options, kept in chrome.storage.local: on this machine only (never synced to the user's Google account,
// since one of them is an API key). The service worker reads them at each Start; the options page writes them.

export const DEFAULT_SETTINGS = Object.freeze({
  serverUrl: "ws://127.0.0.1:8000/ws/session",
  apiKey: "",
  microphoneRole: "consultant", // channel 0; the tab (channel 1) gets the other role
  tabAudio: true, // false: a one-channel session, microphone only
});

const ROLES = ["consultant", "customer"];

export async function loadSettings() {
  const stored = await chrome.storage.local.get(Object.keys(DEFAULT_SETTINGS));
  return { ...DEFAULT_SETTINGS, ...stored };
}

export async function saveSettings(settings) {
  await chrome.storage.local.set(settings);
}

/** The `channel_roles` session parameter (docs/PROTOCOL.md): channel 0's role, then channel 1's. */
export function channelRoles(microphoneRole) {
  const microphone = ROLES.includes(microphoneRole) ? microphoneRole : "consultant";
  return [microphone, ROLES.find((role) => role !== microphone)].join(",");
}

/** Why a server URL cannot be used, or null when it can. */
export function serverUrlProblem(value) {
  let url;
  try {
    url = new URL(value);
  } catch {
    return "not a URL";
  }
  if (url.protocol !== "ws:" && url.protocol !== "wss:") return "it must start with ws:// or wss://";
  return null;
}
