// Keyboard answers: a key listed in an element's data-keys clicks that button or focuses that field.
// Answers are plain form posts, so every page also works without JavaScript.
(function () {
  "use strict";
  let sent = false;
  document.addEventListener("submit", function (event) {
    if (sent) { event.preventDefault(); return; }  // one answer per page: no double posts
    sent = true;
  });
  window.addEventListener("pageshow", function () { sent = false; });  // a page restored by "back"
  document.addEventListener("keydown", function (event) {
    const target = event.target;
    const typing = target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement;
    if (event.key === "Escape" && typing) { target.blur(); return; }
    if (typing || event.ctrlKey || event.metaKey || event.altKey) { return; }
    for (const element of document.querySelectorAll("[data-keys]")) {
      if (!element.dataset.keys.split(",").includes(event.key)) { continue; }
      event.preventDefault();
      if (element instanceof HTMLButtonElement) {
        element.click();
      } else {
        element.focus();
        element.select();
      }
      return;
    }
  });
})();
