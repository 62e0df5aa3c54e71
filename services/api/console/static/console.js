// slatrack console: the one script (no inline script: the pages' CSP forbids it).
"use strict";

// The queue's countdowns: each <time class="remaining" data-due="EPOCH"> shows the time left to
// its due instant, or how long it is overdue, updated every second. The server rendered the same
// text as of its now (table#queue's data-now): the countdown goes on from there by this browser's
// elapsed time, so a browser whose clock is off still counts from the server's instant.
(function () {
  var table = document.getElementById("queue");
  var served = table ? parseInt(table.getAttribute("data-now"), 10) : NaN;
  var offset = isNaN(served) ? 0 : served - Date.now() / 1000;

  function duration(seconds) {
    var rest = Math.abs(Math.trunc(seconds));
    var days = Math.floor(rest / 86400); rest -= days * 86400;
    var hours = Math.floor(rest / 3600); rest -= hours * 3600;
    var minutes = Math.floor(rest / 60); var secs = rest - minutes * 60;
    var mm = (minutes < 10 ? "0" : "") + minutes;
    if (days) { return days + "d " + hours + "h " + mm + "m"; }
    if (hours) { return hours + "h " + mm + "m"; }
    return minutes + "m " + (secs < 10 ? "0" : "") + secs + "s";
  }

  function tick() {
    var now = Math.floor(Date.now() / 1000 + offset);
    var clocks = document.querySelectorAll("time.remaining[data-due]");
    for (var i = 0; i < clocks.length; i++) {
      var due = parseInt(clocks[i].getAttribute("data-due"), 10);
      if (isNaN(due)) { continue; }
      var left = due - now;
      clocks[i].textContent = left <= 0 ? "overdue " + duration(-left) : duration(left) + " left";
      clocks[i].classList.toggle("overdue", left <= 0);
    }
  }

  function start() {
    if (document.querySelector("time.remaining[data-due]")) {
      tick();
      window.setInterval(tick, 1000);
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
