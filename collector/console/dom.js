// Building the page's elements: one helper, so no page sets HTML as text
// (the Content-Security-Policy and plain safety both want that).

/** An element with attributes (`text` its text, `class` its class) and children. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") node.textContent = v;
    else if (k === "class") node.className = v;
    else node.setAttribute(k, v);
  }
  node.append(...children);
  return node;
}
