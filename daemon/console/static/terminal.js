// metal console: a machine's serial console in xterm.js over a
// WebSocket. The server says first whether this session may type; keys
// of a read-only session are not sent (and the server drops them anyway).
(function () {
  "use strict";
  var el = document.getElementById("terminal");
  if (!el || !window.Terminal) return;
  var status = document.getElementById("terminal-status");
  var term = new window.Terminal({ cursorBlink: true, disableStdin: true, fontSize: 14, scrollback: 5000 });
  term.open(el);
  var proto = location.protocol === "https:" ? "wss://" : "ws://";
  var ws = new WebSocket(proto + location.host + el.getAttribute("data-socket"));
  ws.binaryType = "arraybuffer";
  var enc = new TextEncoder();
  function say(text) { if (status) status.textContent = text; }
  ws.addEventListener("message", function (e) {
    if (typeof e.data !== "string") {
      term.write(new Uint8Array(e.data));
      return;
    }
    var m = JSON.parse(e.data);
    if (m.mode) {
      el.setAttribute("data-mode", m.mode);
      term.options.disableStdin = m.mode !== "interactive";
      say(m.mode === "interactive" ? "Connected: what you type goes to " + m.machine + "." : "Connected, read-only: you watch " + m.machine + "'s console.");
      if (m.mode === "interactive") term.focus();
    }
    if (m.closed) {
      el.setAttribute("data-mode", "closed");
      say("Closed: " + m.closed + ". Reload to connect again.");
    }
  });
  ws.addEventListener("close", function () {
    if (el.getAttribute("data-mode") !== "closed") say("Disconnected. Reload to connect again.");
    el.setAttribute("data-mode", "closed");
    term.options.disableStdin = true;
  });
  term.onData(function (d) {
    if (el.getAttribute("data-mode") === "interactive" && ws.readyState === WebSocket.OPEN) ws.send(enc.encode(d));
  });
})();
