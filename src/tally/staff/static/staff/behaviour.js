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
// An htmx request answered with an error it does not swap (403, 404, 500, 503: see htmx-config
// in base.html) or that never reached the server: a fix confirmed a moment ago, a filter, a tab
// would otherwise seem to do nothing, with no word on whether anything was saved. Say so beside
// what the answer was to replace; the next answer that succeeds takes the notice away.
var FAILURE_ID = "request-failure";

function requestFailureText(xhr) {
  var status = xhr ? xhr.status : 0;
  if (status === 503) {
    return "Tally cannot reach its database right now, so nothing was changed. Wait a few seconds and try again.";
  }
  if (status === 403 || status === 404) {
    var page = new DOMParser().parseFromString(xhr.responseText || "", "text/html");
    var said = page.querySelector("main .alert, main h1");
    var why = said ? said.textContent.trim() : (status === 403 ? "Not allowed." : "Not found.");
    return why.replace(/\.?$/, ".") + " Nothing was changed; reload the page to see it as it is now.";
  }
  return "Something went wrong on the server (error " + status + "). Reload the page to see what was saved.";
}

function showRequestFailure(event, text) {
  var target = event.detail && event.detail.target;
  var main = document.getElementById("main");
  var notice = document.getElementById(FAILURE_ID);
  if (!notice) {
    notice = document.createElement("p");
    notice.id = FAILURE_ID;
    notice.className = "alert alert-error";
    notice.setAttribute("role", "alert");
  }
  notice.textContent = text;
  if (target instanceof Element && target !== main && target.parentNode && document.body.contains(target)) {
    target.parentNode.insertBefore(notice, target);
  } else if (main) {
    main.insertBefore(notice, main.firstChild);
  }
}

document.addEventListener("htmx:responseError", function (event) {
  showRequestFailure(event, requestFailureText(event.detail.xhr));
});
document.addEventListener("htmx:sendError", function (event) {
  showRequestFailure(event, "Tally could not be reached (is the network down?), so nothing was changed. " +
    "Try again in a moment.");
});
document.addEventListener("htmx:afterRequest", function (event) {
  var notice = document.getElementById(FAILURE_ID);
  if (notice && event.detail.successful) {
    notice.remove();
  }
});

// A box that scrolls sideways (.scroll-x: a table wider than a phone, the timeline picture) says so:
// data-more tells the stylesheet where the rest is (right, left or both), which it shows above the
// box's content and by fading that edge. While it scrolls, the box is a named region that takes the
// keyboard's focus, so that the arrow keys scroll it (a table of plain text has nothing else to focus).
function markScrollBox(box) {
  var hidden = box.scrollWidth - box.clientWidth;
  if (hidden <= 1) {
    if (box.dataset.more) {
      delete box.dataset.more;
      ["tabindex", "role", "aria-label"].forEach(function (name) { box.removeAttribute(name); });
    }
    return;
  }
  box.dataset.more = box.scrollLeft <= 1 ? "right" : (box.scrollLeft >= hidden - 1 ? "left" : "both");
  if (!box.hasAttribute("tabindex")) {
    var caption = box.querySelector("caption");
    var name = box.dataset.label || (caption ? caption.textContent.trim() : "Table");
    box.setAttribute("tabindex", "0");
    box.setAttribute("role", "region");
    box.setAttribute("aria-label", name + " (scrolls sideways)");
  }
}

function markScrollBoxes() {
  document.querySelectorAll(".scroll-x").forEach(markScrollBox);
}

document.addEventListener("DOMContentLoaded", markScrollBoxes);
window.addEventListener("load", markScrollBoxes);
window.addEventListener("resize", markScrollBoxes);
document.addEventListener("htmx:load", markScrollBoxes);  // a tab or panel swapped in
document.addEventListener("scroll", function (event) {  // scroll does not bubble: caught on its way down
  if (event.target instanceof Element && event.target.matches(".scroll-x")) {
    markScrollBox(event.target);
  }
}, true);
