// The toolbar popup: start or stop the call from wherever you are, and open the side panel to follow it.
// Clicking the extension's icon on the call's tab is also what lets Chrome hand that tab's audio over.

import { activeTabId, ask, followCall } from "./messages.js";

const $ = (id) => document.getElementById(id);
const RUNNING_PHASES = new Set(["connecting", "live", "reconnecting", "stopping"]);

function refused(reply) {
  $("refusal").hidden = !reply?.error;
  $("refusal").textContent = reply?.error ? `${reply.error.code}: ${reply.error.message}` : "";
}

followCall((event) => {
  if (event.type !== "phase") return;
  $("status").className = `pill ${event.phase}`;
  $("status").textContent = event.text || event.phase;
  $("start").disabled = RUNNING_PHASES.has(event.phase);
  $("stop").disabled = !RUNNING_PHASES.has(event.phase);
});

$("start").addEventListener("click", async () => {
  $("start").disabled = true;
  const reply = await ask("start", { tabId: await activeTabId() });
  refused(reply);
  if (!reply?.ok) $("start").disabled = false;
});

$("stop").addEventListener("click", async () => {
  $("stop").disabled = true;
  refused(await ask("stop"));
});

// Needs the click's user gesture: Chrome opens a side panel only in answer to the user.
$("panel").addEventListener("click", async () => {
  const current = await chrome.windows.getCurrent();
  await chrome.sidePanel.open({ windowId: current.id });
});
