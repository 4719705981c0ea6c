// Admin and account pages: copy buttons for secrets shown once, and the grants grid
// ticking `access` with any other right (the server stores it that way too).
"use strict";

(() => {
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-copy-from]");
    if (!button) return;
    const source = document.querySelector(button.dataset.copyFrom);
    if (!source) return;
    try {
      await navigator.clipboard.writeText(source.textContent.trim());
      button.textContent = "Copied";
      button.classList.add("copied");
    } catch {
      // No clipboard (plain http on another host): select the text for a manual copy.
      const range = document.createRange();
      range.selectNodeContents(source);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
    }
  });

  document.addEventListener("change", (event) => {
    const box = event.target;
    if (!(box instanceof HTMLInputElement) || !box.dataset.right) return;
    const row = box.closest("[data-grant-row]");
    if (!row) return;
    const access = row.querySelector('input[data-right="access"]');
    if (box.dataset.right !== "access" && box.checked && access) access.checked = true;
    if (box === access && !access.checked) {
      // No access means no other right either.
      row.querySelectorAll("input[data-right]").forEach((other) => { other.checked = false; });
    }
  });
})();
