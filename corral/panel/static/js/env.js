// The Environment tab: the add form's value field is a password field while "Secret" is
// ticked (the default), plain text otherwise; the restart/reload choice only concerns
// plain variables, so it is hidden for a secret. Without this script the form still
// works: the value is then always typed into a password field.
"use strict";

(() => {
  const form = document.querySelector("form[data-env-form]");
  if (!form) return;
  const secret = form.querySelector("input[name=secret]");
  const value = form.querySelector("input[name=value]");
  const apply = form.querySelector("[data-apply]");
  if (!secret || !value) return;

  function sync() {
    value.type = secret.checked ? "password" : "text";
    value.autocomplete = secret.checked ? "new-password" : "off";
    if (apply) apply.hidden = secret.checked;
  }
  secret.addEventListener("change", sync);
  sync();
})();
