/* Dashboard charts (vendored uPlot): realtime processed/failed deltas per poll of /<pool>/stats, and history. */
(function () {
  "use strict";
  var kb = window.kiqboard || {};
  var css = getComputedStyle(document.documentElement);
  var PROCESSED = css.getPropertyValue("--processed").trim() || "#2f855a";
  var FAILED = css.getPropertyValue("--failed").trim() || "#c53030";
  var AXIS = css.getPropertyValue("--muted").trim() || "#667085";
  var GRID = css.getPropertyValue("--border").trim() || "#dde1e7";
  var MAX_POINTS = 100;
  function utc(ts) { return window.uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); }   // no local times, as Sidekiq

  function width(el) { return Math.max(280, el.clientWidth || 600); }
  function axes() {
    return [
      { stroke: AXIS, grid: { stroke: GRID, width: 1 }, ticks: { stroke: GRID } },
      { stroke: AXIS, grid: { stroke: GRID, width: 1 }, ticks: { stroke: GRID },
        size: function (u, values) {
          var longest = (values || []).reduce(function (n, v) { return Math.max(n, String(v).length); }, 1);
          return 24 + longest * 7;
        },
        values: function (u, vals) { return vals.map(function (v) { return v == null ? "" : Number(v).toLocaleString("en-US"); }); } }
    ];
  }
  function series(timeLabel) {
    return [
      { label: timeLabel },
      { label: "Processed", stroke: PROCESSED, width: 2, fill: PROCESSED + "22", points: { show: true, size: 4 } },
      { label: "Failed", stroke: FAILED, width: 2, fill: FAILED + "22", points: { show: true, size: 4 } }
    ];
  }

  /* -------------------------------------------------------------- realtime */
  var rt = document.getElementById("realtime-chart");
  if (rt && window.uPlot) {
    var url = rt.getAttribute("data-stats-url");
    var data = [[], [], []], last = null, timer = null, polls = 0;
    var chart = new uPlot({ width: width(rt), height: 240, series: series("Time"), axes: axes(),
      tzDate: utc, legend: { live: false },
      scales: { x: { time: true, range: function (u, min, max) {
        // at least a one-minute window, so a few first points do not stretch into milliseconds
        var end = max == null ? Date.now() / 1000 : max;
        return [Math.min(min == null ? end : min, end - 60), end];
      } }, y: { range: function (u, min, max) { return [0, Math.max(5, max * 1.1)]; } } } }, data, rt);
    rt.setAttribute("data-points", "0");
    var slider = document.getElementById("poll-interval"), output = document.getElementById("poll-interval-value");
    var beacon = document.getElementById("beacon"), status = document.getElementById("realtime-status");
    function showInterval() {
      var ms = kb.pollInterval(); slider.value = ms; output.textContent = Math.round(ms / 1000) + " sec";
    }
    slider.addEventListener("input", function () {
      var ms = Math.max(kb.MIN_INTERVAL, parseInt(slider.value, 10) || 5000);
      window.localStorage.setItem("sidekiqTimeInterval", String(ms));
      showInterval(); schedule();
    });
    function setText(selector, value) {
      document.querySelectorAll(selector).forEach(function (el) { el.textContent = value; });
    }
    function latency(s) {
      s = Number(s) || 0;
      return (s < 10 ? s.toFixed(2) : Math.round(s).toLocaleString("en-US")) + " s";
    }
    function apply(json) {
      var sk = json.sidekiq;
      Object.keys(sk).forEach(function (k) {
        setText('[data-stat="' + k + '"]', k === "default_latency" ? latency(sk[k]) : kb.formatNumber(sk[k]));
      });
      Object.keys(json.redis || {}).forEach(function (k) { setText('[data-redis="' + k + '"]', json.redis[k]); });
      var time = document.getElementById("server-time"); if (time) time.textContent = json.server_utc_time;
      if (last) {
        data[0].push(Date.now() / 1000);
        data[1].push(Math.max(0, sk.processed - last.processed));
        data[2].push(Math.max(0, sk.failed - last.failed));
        if (data[0].length > MAX_POINTS) data.forEach(function (s) { s.shift(); });
        chart.setData(data);
        rt.setAttribute("data-points", String(data[0].length));
        status.textContent = "Processed " + kb.formatNumber(data[1][data[1].length - 1]) + ", failed " +
          kb.formatNumber(data[2][data[2].length - 1]) + " in the last poll.";
      }
      last = sk;
      polls += 1; rt.setAttribute("data-polls", String(polls));
      beacon.classList.remove("error"); beacon.classList.add("pulse");
      setTimeout(function () { beacon.classList.remove("pulse"); }, 600);
    }
    function poll() {
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.json(); })
        .then(apply)
        .catch(function (e) { beacon.classList.add("error"); status.textContent = "Polling failed (" + e.message + "); retrying."; })
        .then(schedule);
    }
    function schedule() { clearTimeout(timer); timer = setTimeout(poll, kb.pollInterval()); }
    showInterval();
    poll();   // first values now; deltas start with the next poll
    window.addEventListener("resize", function () { chart.setSize({ width: width(rt), height: 240 }); });
  }

  /* -------------------------------------------------------------- history */
  var hist = document.getElementById("history-chart");
  if (hist && window.uPlot) {
    var h = JSON.parse(hist.getAttribute("data-history"));
    var xs = h.dates.map(function (d) { return Date.parse(d + "T00:00:00Z") / 1000; });
    var hchart = new uPlot({ width: width(hist), height: 240, series: series("Date"), axes: axes(), tzDate: utc, legend: { live: false },
      scales: { x: { time: true } } }, [xs, h.processed, h.failed], hist);
    window.addEventListener("resize", function () { hchart.setSize({ width: width(hist), height: 240 }); });
  }
})();
