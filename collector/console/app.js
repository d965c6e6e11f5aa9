// The console's entry point: draws the page the URL names.

import { mount as account } from "./account.js";
import { mount as fleet } from "./fleet.js";
import { mount as host } from "./host.js";
import { mount as alerts } from "./alerts.js";

const main = document.getElementById("main");
const connection = document.getElementById("connection");

function notFound() {
  const h1 = document.createElement("h1");
  h1.textContent = "Page not found";
  const p = document.createElement("p");
  p.textContent = "The console has no page at this address.";
  main.replaceChildren(h1, p);
}

// First, so that its one request goes out before the page's many.
account(document.querySelector("header.top"));

const path = location.pathname;
const hostPath = path.match(/^\/hosts\/([^/]+)$/);
if (path === "/") {
  document.getElementById("nav-fleet").setAttribute("aria-current", "page");
  fleet(main, connection);
} else if (path === "/alerts") {
  document.getElementById("nav-alerts").setAttribute("aria-current", "page");
  alerts(main, connection);
} else if (hostPath) {
  const name = decodeURIComponent(hostPath[1]);
  // The host being looked at, as the navigation's current page.
  const link = document.createElement("a");
  link.href = location.pathname;
  link.id = "nav-host";
  link.textContent = `Host ${name}`;
  link.setAttribute("aria-current", "page");
  document.getElementById("nav-alerts").after(link);
  host(main, connection, name);
} else {
  notFound();
}
