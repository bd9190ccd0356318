// Behaviour that would otherwise be inline handlers, which the Content-Security-Policy forbids:
//   <form data-confirm="Question?">  asks before it is submitted;
//   <button data-print>              prints the page.
// And every POST form that leaves the page is sent once: a double click on "Sell package" or
// "Record payment" would otherwise send it twice, and the server would sell or record it twice.
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (!(form instanceof HTMLFormElement)) {
    return;
  }
  if (form.dataset.submitting) {
    event.preventDefault();  // already on its way
    return;
  }
  if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
    return;
  }
  // htmx sends its own forms (and prevents their default); a GET form changes nothing.
  if (!event.defaultPrevented && (form.getAttribute("method") || "get").toLowerCase() === "post") {
    form.dataset.submitting = "true";
  }
});
// Back to a page kept in the browser's back/forward cache: its forms may be sent again.
window.addEventListener("pageshow", function (event) {
  if (event.persisted) {
    document.querySelectorAll("form[data-submitting]").forEach(function (form) {
      delete form.dataset.submitting;
    });
  }
});
document.addEventListener("click", function (event) {
  var target = event.target instanceof Element ? event.target.closest("[data-print]") : null;
  if (target) {
    event.preventDefault();
    window.print();
  }
});
