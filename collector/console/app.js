// The console's entry point: draws the page the URL names. Each page's
// module is imported when that page is shown, so a page runs only its own
// modules (the collector's HTML preloads exactly those).

import { mount as account } from "./account.js";

const main = document.getElementById("main");
const connection = document.getElementById("connection");

function message(title, text) {
  const h1 = document.createElement("h1");
  h1.textContent = title;
  const p = document.createElement("p");
  p.textContent = text;
  main.replaceChildren(h1, p);
}

function notFound() {
  message("Page not found", "The console has no page at this address.");
}

/** The page module `loaded` (an import), mounted with `args`; a failed import is said in the page. */
function show(loaded, ...args) {
  loaded.then(
    (page) => page.mount(...args),
    (e) => message("The page could not be loaded", `Its script did not load (${e.message}); reload the page to try again.`),
  );
}

// First, so that its one request goes out before the page's many.
account(document.querySelector("header.top"));

const path = location.pathname;
const hostPath = path.match(/^\/hosts\/([^/]+)$/);
if (path === "/") {
  document.getElementById("nav-fleet").setAttribute("aria-current", "page");
  show(import("./fleet.js"), main, connection);
} else if (path === "/alerts") {
  document.getElementById("nav-alerts").setAttribute("aria-current", "page");
  show(import("./alerts.js"), main, connection);
} else if (hostPath) {
  const name = decodeURIComponent(hostPath[1]);
  // The host being looked at, as the navigation's current page.
  const link = document.createElement("a");
  link.href = location.pathname;
  link.id = "nav-host";
  link.textContent = `Host ${name}`;
  link.setAttribute("aria-current", "page");
  document.getElementById("nav-alerts").after(link);
  show(import("./host.js"), main, connection, name);
} else {
  notFound();
}
