// kiqboard overview: refresh the pool cards every few seconds by fetching the server-rendered fragment
// (GET /?fragment=pools). No inline script or style anywhere, so the nonce CSP holds.
(function () {
  "use strict";
  var root = document.getElementById("overview");
  var target = document.getElementById("overview-pools");
  if (!root || !target || !window.fetch) return;
  var url = root.getAttribute("data-fragment-url");
  var seconds = Math.max(2, parseInt(root.getAttribute("data-refresh"), 10) || 5);
  var live = document.getElementById("overview-live");
  var timer = null;
  var inFlight = false;

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(tick, seconds * 1000);
  }

  function enabled() {
    return !document.hidden && (!live || live.checked);
  }

  function tick() {
    if (inFlight || !enabled()) { schedule(); return; }
    inFlight = true;
    fetch(url, { credentials: "same-origin", cache: "no-store", headers: { "Accept": "text/html" } })
      .then(function (response) {
        // Signed out meanwhile (redirected to /login) or a 401: reload so the browser lands on the sign-in page.
        if (response.status === 401 || response.redirected || response.headers.get("X-Kiqboard-Fragment") !== "pools") {
          window.location.reload();
          return null;
        }
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.text();
      })
      .then(function (html) {
        if (html === null) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        var nodes = Array.prototype.slice.call(doc.body.childNodes);
        target.replaceChildren.apply(target, nodes);
        root.classList.remove("overview-stale");
      })
      .catch(function () { root.classList.add("overview-stale"); })
      .then(function () { inFlight = false; schedule(); });
  }

  document.addEventListener("visibilitychange", function () { if (enabled()) tick(); });
  if (live) live.addEventListener("change", function () { if (enabled()) tick(); });
  schedule();
})();
