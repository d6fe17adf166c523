// The mana-ai console's only script: refreshes a page's live part in place (no full reload) by
// polling the fragment its `data-live` attribute names, and says when the daemon cannot be
// reached or the session has ended. Served by the daemon; the page's CSP allows nothing else.
"use strict";

(function () {
  const live = document.querySelector("[data-live]");
  const status = document.querySelector("[data-testid=connection]");
  if (!live || !status) {
    return;
  }
  const url = live.getAttribute("data-live");
  const every = Math.max(1, Number(live.getAttribute("data-every")) || 5) * 1000;
  const label = status.querySelector("[data-state]");
  let lastGood = new Date();
  let timer = null;
  let running = false;

  function say(state, text) {
    status.setAttribute("data-connection", state);
    label.setAttribute("data-state", state);
    label.textContent = text;
  }

  function since() {
    return lastGood.toLocaleTimeString();
  }

  async function refresh() {
    if (running) {
      return;
    }
    running = true;
    clearTimeout(timer);
    try {
      const response = await fetch(url, {
        credentials: "same-origin", redirect: "manual", cache: "no-store",
        headers: {"Accept": "text/html"},
      });
      if (response.type === "opaqueredirect" || response.status === 401) {
        say("expired", "Your session has ended: reload the page to log in again.");
        return;  // no more polling until the operator logs in again
      }
      if (!response.ok) {
        say("error", "The daemon answered " + response.status + "; showing data from " + since() + ".");
      } else {
        const html = await response.text();
        live.innerHTML = html;  // server-rendered and escaped there; scripts in it never run
        lastGood = new Date();
        say("live", "Live: updated " + since());
      }
    } catch (error) {
      say("offline", "The daemon is unreachable; showing data from " + since() + ".");
    } finally {
      running = false;
    }
    schedule();
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(function () {
      if (document.hidden) {
        schedule();  // a hidden tab does not poll
      } else {
        refresh();
      }
    }, every);
  }

  const button = status.querySelector("[data-refresh]");
  if (button) {
    button.addEventListener("click", refresh);
  }
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) {
      refresh();
    }
  });
  schedule();
})();
