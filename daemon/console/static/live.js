// metal console: keep the live parts of a page current. Every element
// with data-stream is re-rendered by the server on each change in the
// inventory and swapped in here; without this script the page is simply
// as of its loading, and still complete.
(function () {
  "use strict";
  var status = document.getElementById("live-status");
  function mark(live) {
    if (!status) return;
    status.hidden = false;
    status.textContent = live ? "live" : "reconnecting…";
    status.className = "live-status" + (live ? " on" : "");
  }
  document.querySelectorAll("[data-stream]").forEach(function (el) {
    if (!window.EventSource) return;
    var es = new EventSource(el.getAttribute("data-stream"));
    es.addEventListener("open", function () { mark(true); });
    es.addEventListener("html", function (e) {
      el.innerHTML = e.data; // rendered and escaped by the server's templates
      el.setAttribute("data-updated", String(Date.now()));
      applyFilter();
    });
    es.addEventListener("error", function () { mark(false); }); // EventSource retries by itself
  });

  // Typing in the filter box narrows the table at once; submitting it
  // asks the server, which is what works without script.
  var filter = document.getElementById("filter");
  function applyFilter() {
    if (!filter) return;
    var q = filter.value.trim().toLowerCase();
    document.querySelectorAll("#machine-rows tr[data-machine]").forEach(function (tr) {
      tr.hidden = q !== "" && tr.textContent.toLowerCase().indexOf(q) < 0;
    });
  }
  if (filter) filter.addEventListener("input", applyFilter);
})();

// Copy buttons (the adopt view's HCL block): the clipboard where the
// browser allows it, else the text is selected for Ctrl-C.
(function () {
  "use strict";
  document.querySelectorAll("[data-copy]").forEach(function (btn) {
    btn.addEventListener("click", function () {
      var el = document.getElementById(btn.getAttribute("data-copy"));
      var status = document.getElementById("copy-status");
      if (!el) return;
      var range = document.createRange();
      range.selectNodeContents(el);
      var sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      function said(t) { if (status) status.textContent = t; }
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(el.textContent).then(function () { said("Copied."); }, function () { said("Selected: press Ctrl-C to copy."); });
      } else {
        said("Selected: press Ctrl-C to copy.");
      }
    });
  });
})();
