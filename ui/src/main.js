// The /ui/ page: a sign-in form that hands the pasted token to the element.
// The token lives in memory only: never in storage, cookies or the URL.
import "./page.css";
import "./trailhouse-audit-log.js";

const form = document.getElementById("sign-in");
const log = document.getElementById("log");
const signOut = document.getElementById("sign-out");

form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const input = form.elements.namedItem("token");
  const token = input.value.trim();
  input.value = "";
  if (!token) return;
  // A deep link (#event=<id>) opens that event's details once signed in.
  const linked = new URLSearchParams(location.hash.slice(1)).get("event");
  if (linked) log.event = linked;
  log.token = token;
  form.hidden = true;
  log.hidden = false;
  signOut.hidden = false;
});

signOut.addEventListener("click", () => {
  log.token = "";
  log.hidden = true;
  form.hidden = false;
  signOut.hidden = true;
  location.reload();
});
