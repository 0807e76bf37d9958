// flowguard console: live updates over Server-Sent Events. The server names the
// topics that changed; the page fetches its live part again and swaps it in.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var topics = document.body.getAttribute("data-topics");
  // Filters apply as soon as they change.
  document.querySelectorAll("form.filters select").forEach(function (s) {
    s.addEventListener("change", function () { s.form.submit(); });
  });
  if (!live || !topics || !window.EventSource) return;
  var busy = false, again = false;
  function reload() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(location.href, { headers: { "X-Partial": "1" }, credentials: "same-origin" })
      .then(function (r) {
        var banner = document.getElementById("nats-offline"), offline = r.headers.get("X-Flowguard-Offline");
        if (banner) {
          banner.textContent = "";
          if (offline) {
            var p = document.createElement("p");
            p.className = "flash err";
            p.textContent = offline;
            banner.appendChild(p);
          }
        }
        return r.text();
      })
      .then(function (html) {
        // Keep open <details> open across the swap.
        var open = {};
        live.querySelectorAll("details[open] summary").forEach(function (s) { open[s.textContent] = true; });
        live.innerHTML = html;
        live.querySelectorAll("details summary").forEach(function (s) { if (open[s.textContent]) s.parentNode.open = true; });
        document.body.setAttribute("data-updated", String(Date.now()));
      })
      .catch(function () {})
      .then(function () {
        busy = false;
        if (again) { again = false; reload(); }
      });
  }
  var es = new EventSource("/sse?topics=" + encodeURIComponent(topics));
  es.addEventListener("change", reload);
  // A change between the page's render and this stream's start, or while the
  // stream was down, was not heard: catch up once the stream is open.
  es.onopen = function () { document.body.classList.remove("offline"); reload(); };
  es.onerror = function () { document.body.classList.add("offline"); };
})();
