// Berth UI: the only script. Pages work without it; it adds copy buttons and confirmations.
"use strict";
document.addEventListener("click", function (ev) {
  var el = ev.target.closest("[data-copy]");
  if (el) {
    var text = el.getAttribute("data-copy");
    var done = function () { var old = el.textContent; el.textContent = "Copied"; setTimeout(function () { el.textContent = old; }, 1200); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { fallback(text); done(); });
    } else { fallback(text); done(); }
    return;
  }
  var confirmEl = ev.target.closest("button[data-confirm]");
  if (confirmEl && !window.confirm(confirmEl.getAttribute("data-confirm"))) { ev.preventDefault(); }
});
document.addEventListener("submit", function (ev) {
  var form = ev.target;
  if (form.hasAttribute("data-confirm") && !window.confirm(form.getAttribute("data-confirm"))) { ev.preventDefault(); }
});
function fallback(text) {
  var area = document.createElement("textarea");
  area.value = text; area.setAttribute("readonly", ""); area.className = "offscreen";
  document.body.appendChild(area); area.select();
  try { document.execCommand("copy"); } catch (e) { /* nothing more to try */ }
  document.body.removeChild(area);
}
document.documentElement.classList.add("js");
