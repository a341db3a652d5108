"use strict";
// shows the error after a failed login (/?failed=1); inline scripts are not allowed by the page's CSP
if (new URLSearchParams(window.location.search).has("failed")) {
  document.getElementById("failed").hidden = false;
}
