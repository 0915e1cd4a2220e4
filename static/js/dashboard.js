/* kiqboard pool pages: confirmations, selection (select-all + shift-click ranges), args toggles, live poll
   that keeps the selection, bulk "all" actions with streamed NDJSON progress, relative times. No inline JS. */
(function () {
  "use strict";

  var MIN_INTERVAL = 2000, DEFAULT_INTERVAL = 5000, MAX_INTERVAL = 60000;

  function pollInterval() {
    var raw = parseInt(window.localStorage.getItem("sidekiqTimeInterval"), 10);
    if (!isFinite(raw)) raw = DEFAULT_INTERVAL;
    return Math.min(MAX_INTERVAL, Math.max(MIN_INTERVAL, raw));   // never under 2 s (CVE-2023-26141)
  }
  window.kiqboard = window.kiqboard || {};
  window.kiqboard.pollInterval = pollInterval;
  window.kiqboard.MIN_INTERVAL = MIN_INTERVAL;

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function formatNumber(n) { return Number(n).toLocaleString("en-US"); }
  window.kiqboard.formatNumber = formatNumber;

  /* ---------------------------------------------------------------- relative times */
  function relativeWords(seconds) {
    seconds = Math.abs(seconds);
    if (seconds < 1) return null;
    if (seconds < 45) return "less than a minute";
    var m = seconds / 60; if (m < 1.5) return "a minute"; if (m < 45) return Math.round(m) + " minutes";
    var h = m / 60; if (h < 1.5) return "an hour"; if (h < 24) return Math.round(h) + " hours";
    var d = h / 24; if (d < 1.5) return "a day"; if (d < 30) return Math.round(d) + " days";
    var mo = d / 30.4375; if (mo < 1.5) return "a month"; if (mo < 12) return Math.round(mo) + " months";
    var y = d / 365.25; if (y < 1.5) return "a year"; return Math.round(y) + " years";
  }
  function refreshTimes(root) {
    var now = Date.now();
    (root || document).querySelectorAll("time.rel[datetime]").forEach(function (el) {
      var t = Date.parse(el.getAttribute("datetime"));
      if (!isFinite(t)) return;
      var delta = (t - now) / 1000, words = relativeWords(delta);
      el.textContent = words === null ? "just now" : (delta > 0 ? "in " + words : words + " ago");
    });
  }
  setInterval(refreshTimes, 30000);

  /* ---------------------------------------------------------------- confirmations + bulk all */
  document.addEventListener("submit", function (event) {
    var form = event.target, submitter = event.submitter;
    var message = (submitter && submitter.getAttribute("data-confirm")) || form.getAttribute("data-confirm");
    if (submitter && submitter.hasAttribute("data-needs-selection") && !form.querySelector("input.select-row:checked")) {
      event.preventDefault();
      window.alert("Select one or more jobs first.");
      return;
    }
    if (message && !window.confirm(message)) { event.preventDefault(); return; }
    if (form.hasAttribute("data-all-action") && window.fetch && window.ReadableStream) {
      event.preventDefault();
      runAllAction(form);
    }
  });

  function runAllAction(form) {
    var status = document.getElementById("bulk-status"), bar = document.getElementById("bulk-progress"),
        text = document.getElementById("bulk-text"), label = form.querySelector("button").textContent.trim();
    document.querySelectorAll("[data-all-action] button").forEach(function (b) { b.disabled = true; });
    if (status) { status.hidden = false; text.textContent = label + "…"; bar.removeAttribute("value"); }
    var done = false;
    fetch(form.action, {
      method: "POST", credentials: "same-origin", body: new FormData(form),
      headers: { "Accept": "application/x-ndjson", "X-CSRF-Token": csrfToken() }
    }).then(function (response) {
      if (!response.ok || !response.body) throw new Error("HTTP " + response.status);
      var reader = response.body.getReader(), decoder = new TextDecoder(), buffer = "";
      function handle(line) {
        if (!line.trim()) return;
        var event = JSON.parse(line);
        if (event.event === "progress" && status) {
          bar.max = Math.max(1, event.total); bar.value = event.done;
          text.textContent = label + ": " + formatNumber(event.done) + " of " + formatNumber(event.total);
        } else if (event.event === "done") {
          done = true;
          if (status) { bar.max = 1; bar.value = 1; text.textContent = event.message; }
          setTimeout(function () { window.location.assign(event.location || window.location.href); }, 1200);
        } else if (event.event === "error") {
          done = true; throw new Error(event.message);
        }
      }
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) { handle(buffer); if (!done) throw new Error("the answer ended early"); return; }
          buffer += decoder.decode(chunk.value, { stream: true });
          var lines = buffer.split("\n"); buffer = lines.pop();
          lines.forEach(handle);
          return pump();
        });
      }
      return pump();
    }).catch(function (error) {
      if (status) { text.textContent = label + " failed: " + error.message; }
      document.querySelectorAll("[data-all-action] button").forEach(function (b) { b.disabled = false; });
    });
  }

  /* ---------------------------------------------------------------- selection */
  var lastClicked = null;
  function rows() { return Array.prototype.slice.call(document.querySelectorAll("input.select-row")); }
  function syncSelection() {
    var all = rows(), checked = all.filter(function (c) { return c.checked; });
    all.forEach(function (c) { var tr = c.closest("tr"); if (tr) tr.classList.toggle("selected", c.checked); });
    var selectAll = document.querySelector("input.select-all");
    if (selectAll) {
      selectAll.checked = all.length > 0 && checked.length === all.length;
      selectAll.indeterminate = checked.length > 0 && checked.length < all.length;
    }
    var counter = document.getElementById("selection-count");
    if (counter) counter.textContent = checked.length ? formatNumber(checked.length) + " selected" : "";
    var allActions = document.getElementById("all-actions");
    if (allActions) allActions.hidden = checked.length > 0;   // as Sidekiq 8: "all" buttons hidden while rows are checked
  }
  document.addEventListener("click", function (event) {
    var target = event.target;
    if (target.matches && target.matches("input.select-all")) {
      rows().forEach(function (c) { c.checked = target.checked; });
      syncSelection();
    } else if (target.matches && target.matches("input.select-row")) {
      var all = rows();
      if (event.shiftKey && lastClicked && lastClicked !== target && all.indexOf(lastClicked) >= 0) {
        var a = all.indexOf(lastClicked), b = all.indexOf(target);
        all.slice(Math.min(a, b), Math.max(a, b) + 1).forEach(function (c) { c.checked = target.checked; });
      }
      lastClicked = target;
      syncSelection();
    } else if (target.matches && target.matches("button.toggle-args")) {
      var cell = target.parentNode, full = cell.querySelector(".args-full"), short = cell.querySelector(".args-short");
      var expanded = target.getAttribute("aria-expanded") === "true";
      full.hidden = expanded; short.hidden = !expanded;
      target.setAttribute("aria-expanded", String(!expanded));
      target.textContent = expanded ? "Show All" : "Show Less";
    }
  });
  /* close the pool switcher when clicking elsewhere */
  document.addEventListener("click", function (event) {
    var switcher = document.getElementById("pool-switcher");
    if (switcher && switcher.open && !switcher.contains(event.target)) switcher.open = false;
  });

  /* ---------------------------------------------------------------- live poll */
  var liveButton = document.getElementById("live-poll"), liveTimer = null;
  function liveEnabled() {
    return window.localStorage.getItem("sidekiqLivePoll") === "enabled" || /[?&]poll=true\b/.test(window.location.search);
  }
  function updateCommon(doc) {
    document.querySelectorAll(".tabs [data-stat]").forEach(function (el) {
      var fresh = doc.querySelector('.tabs [data-stat="' + el.getAttribute("data-stat") + '"]');
      if (fresh) el.textContent = fresh.textContent;
    });
    var time = doc.getElementById("server-time"), mine = document.getElementById("server-time");
    if (time && mine) mine.textContent = time.textContent;
  }
  /* The "All" buttons and the set's total sit outside #live: they come and go with the set's entries. */
  function updateAroundLive(doc) {
    var live = document.getElementById("live");
    var freshAll = doc.getElementById("all-actions"), mineAll = document.getElementById("all-actions");
    if (freshAll && !mineAll && live) live.parentNode.insertBefore(document.importNode(freshAll, true), live);
    else if (!freshAll && mineAll) mineAll.remove();
    var freshTotal = doc.querySelector(".set-page .total"), mineTotal = document.querySelector(".set-page .total");
    if (freshTotal && mineTotal) mineTotal.textContent = freshTotal.textContent;
  }
  function livePoll() {
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        if (response.redirected && response.url !== window.location.href) throw new Error("redirected");
        return response.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("live"), live = document.getElementById("live");
        if (fresh && live) {
          var checked = {}, expanded = {};
          live.querySelectorAll("input.select-row:checked").forEach(function (c) { checked[c.value] = true; });
          live.querySelectorAll("tr[data-key] button.toggle-args[aria-expanded=true]").forEach(function (b) {
            expanded[b.closest("tr").getAttribute("data-key")] = true;
          });
          live.replaceChildren.apply(live, Array.prototype.slice.call(fresh.childNodes).map(function (n) {
            return document.importNode(n, true);
          }));
          live.querySelectorAll("input.select-row").forEach(function (c) { if (checked[c.value]) c.checked = true; });
          live.querySelectorAll("tr[data-key]").forEach(function (tr) {
            if (expanded[tr.getAttribute("data-key")]) { var b = tr.querySelector("button.toggle-args"); if (b) b.click(); }
          });
          updateAroundLive(doc);
          lastClicked = null;
          syncSelection();
          refreshTimes(live);
        }
        updateCommon(doc);
      })
      .catch(function () { /* keep the current view; next tick retries */ })
      .then(scheduleLive);
  }
  function scheduleLive() {
    clearTimeout(liveTimer);
    if (liveEnabled()) liveTimer = setTimeout(livePoll, pollInterval());
  }
  function renderLiveButton() {
    if (!liveButton) return;
    var on = liveEnabled();
    liveButton.setAttribute("aria-pressed", String(on));
    liveButton.textContent = on ? "Stop Polling" : "Live Poll";
  }
  if (liveButton) {
    liveButton.addEventListener("click", function () {
      window.localStorage.setItem("sidekiqLivePoll", liveEnabled() ? "disabled" : "enabled");
      renderLiveButton();
      if (liveEnabled()) livePoll(); else clearTimeout(liveTimer);
    });
    renderLiveButton();
    scheduleLive();
  }
  syncSelection();
  refreshTimes();
})();
