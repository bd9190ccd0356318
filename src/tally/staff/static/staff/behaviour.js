// Behaviour that would otherwise be inline handlers, which the Content-Security-Policy forbids:
//   <form data-confirm="Question?">  asks before it is submitted;
//   <button data-print>              prints the page.
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
    event.preventDefault();
  }
});
document.addEventListener("click", function (event) {
  var target = event.target instanceof Element ? event.target.closest("[data-print]") : null;
  if (target) {
    event.preventDefault();
    window.print();
  }
});
