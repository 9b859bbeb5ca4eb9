// Asks for the microphone once, on a page that can show Chrome's prompt; the grant belongs to the extension's
// origin, so the offscreen document can use the microphone from then on.

const result = document.getElementById("result");

async function ask() {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    for (const track of stream.getTracks()) track.stop();
    result.textContent = "Allowed. Go back to the call's tab and press Start again; you can close this tab.";
    result.dataset.state = "granted";
  } catch (error) {
    result.textContent = `Not allowed (${error.name}). Allow it from the microphone icon in the address bar, then try again.`;
    result.dataset.state = "refused";
  }
}

document.getElementById("ask").addEventListener("click", ask);
ask();
