// Keyboard review (j/k move, a accept, r reject, l relabel) and confirmations; the pages
// work without it.
(function () {
  "use strict";
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });
  var rows = Array.prototype.slice.call(document.querySelectorAll("#queue tr.item"));
  if (!rows.length) { return; }
  var at = 0;
  function select(i) {
    rows[at].classList.remove("sel");
    at = Math.max(0, Math.min(rows.length - 1, i));
    rows[at].classList.add("sel");
    rows[at].scrollIntoView({ block: "nearest" });
  }
  function press(action) {
    var button = rows[at].querySelector('button[data-key="' + action + '"]');
    if (button) { button.click(); }
  }
  rows.forEach(function (row, i) { row.addEventListener("click", function () { select(i); }); });
  select(0);
  document.addEventListener("keydown", function (event) {
    var typing = /^(INPUT|TEXTAREA|SELECT)$/.test(event.target.tagName);
    if (typing || event.ctrlKey || event.metaKey || event.altKey) { return; }
    if (event.key === "j") { select(at + 1); }
    else if (event.key === "k") { select(at - 1); }
    else if (event.key === "a") { press("a"); }
    else if (event.key === "r") { press("r"); }
    else if (event.key === "l") {
      var input = rows[at].querySelector("input.relabel");
      if (input) { event.preventDefault(); input.focus(); }
      return;
    } else { return; }
    event.preventDefault();
  });
  // Enter in a row's label box relabels that row.
  rows.forEach(function (row) {
    var input = row.querySelector("input.relabel");
    if (!input) { return; }
    input.addEventListener("keydown", function (event) {
      if (event.key === "Enter") { event.preventDefault(); row.querySelector('button[data-key="l"]').click(); }
    });
  });
})();
