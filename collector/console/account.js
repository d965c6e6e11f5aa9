// The header's account line: who the console runs as and, for a session
// made at login, a button to log out.

import { post, session, toLogin } from "./api.js";

/** Fills `header` with the account line; quiet when the request fails. */
export async function mount(header) {
  let info;
  try {
    info = await session();
  } catch {
    return;
  }
  const line = document.createElement("p");
  line.className = "account";
  line.id = "account";
  const who = document.createElement("span");
  const how = info.via === "certificate" ? "certificate" : "token";
  who.textContent = `${info.name} (${info.role}, ${how})`;
  line.append(who);
  if (info.via === "session") {
    const button = document.createElement("button");
    button.type = "button";
    button.id = "logout";
    button.textContent = "Log out";
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await post("/logout");
        toLogin("logged_out");
      } catch (e) {
        button.disabled = false;
        who.textContent = `Logout failed: ${e.message}`;
      }
    });
    line.append(button);
  }
  header.append(line);
}
