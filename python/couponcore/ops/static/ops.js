// couponcore ops page: refreshes the live part of the page in place every data-refresh-s
// seconds (unless "pause" is ticked or a button has focus), and asks before a drop.
// No framework, no network other than this page itself.
(function () {
  "use strict";
  var body = document.body;
  var every = parseFloat(body.getAttribute("data-refresh-s") || "0");

  document.addEventListener("submit", function (ev) {
    var msg = ev.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) ev.preventDefault();
  });

  if (!(every > 0) || !document.getElementById("live")) return;
  var pause = document.getElementById("pause");
  var busy = false;

  function refresh() {
    if (busy || (pause && pause.checked) || document.hidden) return;
    busy = true;
    fetch(window.location.pathname, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) {
        if (r.status === 401) window.location.reload(); // the session ended: show the login form
        if (r.status !== 200) throw new Error("status " + r.status);
        return r.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var live = doc.getElementById("live");
        var taken = doc.getElementById("taken");
        if (live) document.getElementById("live").replaceWith(live);
        if (taken) document.getElementById("taken").replaceWith(taken);
      })
      .catch(function () { /* the next tick tries again */ })
      .then(function () { busy = false; });
  }
  window.setInterval(refresh, every * 1000);
})();
