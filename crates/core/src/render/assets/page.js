// The status page's only script: re-fetches the page and swaps its body in; when a fetch fails,
// says so in #stale and keeps showing the last page. page.rs fills in the period (milliseconds).
(function () {
  var every = REFRESH_MS;
  function tick() {
    fetch(location.href, { cache: "no-store" })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        document.title = doc.title;
        document.body.replaceWith(document.adoptNode(doc.body));
      })
      .catch(function (e) {
        var s = document.getElementById("stale");
        if (s) {
          s.hidden = false;
          s.textContent = "Not refreshed (" + e.message + "); showing the last page, retrying.";
        }
      })
      .finally(function () {
        setTimeout(tick, every);
      });
  }
  setTimeout(tick, every);
})();
