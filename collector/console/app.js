// The console's entry point: draws the page the URL names.

import { mount as account } from "./account.js";
import { mount as fleet } from "./fleet.js";
import { mount as host } from "./host.js";

const main = document.getElementById("main");
const connection = document.getElementById("connection");

function notFound() {
  const h1 = document.createElement("h1");
  h1.textContent = "Page not found";
  const p = document.createElement("p");
  p.textContent = "The console has no page at this address.";
  main.replaceChildren(h1, p);
}

const path = location.pathname;
const hostPath = path.match(/^\/hosts\/([^/]+)$/);
if (path === "/") {
  document.getElementById("nav-fleet").setAttribute("aria-current", "page");
  fleet(main, connection);
} else if (hostPath) {
  host(main, connection, decodeURIComponent(hostPath[1]));
} else {
  notFound();
}
account(document.querySelector("header.top"));
