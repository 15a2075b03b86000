// The inbox's only script, served from the sandbox itself (CSP script-src
// 'self'). Email HTML never runs: it is in sandboxed frames.
"use strict";
(function () {
  const rows = document.querySelector("tbody[data-live]");
  if (rows) {
    const url = new URL(location.href);
    url.searchParams.set("partial", "1");
    let last = null;
    const poll = async () => {
      try {
        const answer = await fetch(url, { cache: "no-store" });
        if (answer.ok) {
          const html = await answer.text();
          if (html !== last) {
            last = html;
            rows.innerHTML = html;
            const total = rows.querySelector("[data-total]");
            const count = document.getElementById("count");
            if (total && count) count.textContent = total.dataset.total;
          }
        }
      } catch (e) { /* the sandbox restarted; try again */ }
      setTimeout(poll, 1000);
    };
    setTimeout(poll, 1000);
  }
  // Changes go through the admin API with a JSON content type: a page of
  // another origin cannot send that without a CORS preflight.
  const change = (method, path) =>
    fetch(path, { method, headers: { "Content-Type": "application/json" }, body: "{}" });
  document.addEventListener("click", async (event) => {
    const target = event.target;
    if (!(target instanceof HTMLElement)) return;
    if (target.dataset.delete !== undefined) {
      const answer = await change("DELETE", "/_sandbox/emails/" + encodeURIComponent(target.dataset.delete));
      if (answer.ok) location.href = "/";
    } else if (target.dataset.clear !== undefined) {
      if (!confirm("Delete every email in the sandbox?")) return;
      const answer = await change("DELETE", "/_sandbox/emails");
      if (answer.ok) location.reload();
    }
  });
})();
