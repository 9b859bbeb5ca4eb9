// The options page: where the server is, the key, and which role the microphone has. Stored on this machine
// only (settings.js).

import { DEFAULT_SETTINGS, loadSettings, saveSettings, serverUrlProblem } from "./settings.js";

const $ = (id) => document.getElementById(id);

function read() {
  return {
    serverUrl: $("serverUrl").value.trim(),
    apiKey: $("apiKey").value.trim(),
    microphoneRole: $("microphoneRole").value,
    tabAudio: $("tabAudio").checked,
  };
}

function fill(settings) {
  $("serverUrl").value = settings.serverUrl;
  $("apiKey").value = settings.apiKey;
  $("microphoneRole").value = settings.microphoneRole;
  $("tabAudio").checked = settings.tabAudio;
}

$("origin").textContent = new URL(chrome.runtime.getURL("/")).origin;
$("serverUrl").placeholder = DEFAULT_SETTINGS.serverUrl;

$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const settings = read();
  const problem = serverUrlProblem(settings.serverUrl);
  if (problem) {
    $("saved").textContent = `not saved: the server URL ${problem}`;
    return;
  }
  await saveSettings(settings);
  $("saved").textContent = "saved";
});

loadSettings().then(fill);
