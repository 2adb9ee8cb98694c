/* The notification link page, made one page shorter: "Email me a code" posts in the
   background and the code field below is ready at once; a complete 8-digit code (typed,
   pasted or autofilled) opens the message. Without this script the same forms work as plain
   posts (one page more). Loaded only by that page (CSP script-src 'self' there). */
"use strict";
(function () {
  var send = document.getElementById("send-code");
  var verify = document.getElementById("verify");
  var code = document.getElementById("code");
  var status = document.getElementById("send-status");
  var sendButton = document.getElementById("send-button");
  var openButton = document.getElementById("open-button");
  if (!send || !verify || !code || !status || !window.fetch) { return; }
  send.addEventListener("submit", function (event) {
    event.preventDefault();
    sendButton.disabled = true;
    fetch(send.action, {method: "POST", credentials: "same-origin",
                        body: new URLSearchParams(new FormData(send))})
      .then(function (answer) {
        if (!answer.ok) { send.submit(); return; }  // the page that explains (e.g. 429)
        status.textContent = status.getAttribute("data-sent");
        sendButton.textContent = status.getAttribute("data-again");
        sendButton.classList.add("secondary");
        openButton.classList.remove("secondary");
        sendButton.disabled = false;
        code.focus();
      })
      .catch(function () { send.submit(); });
  });
  code.addEventListener("input", function () {
    var value = code.value.replace(/\s+/g, "");
    if (/^[0-9]{8}$/.test(value)) {
      code.value = value;
      if (verify.requestSubmit) { verify.requestSubmit(); } else { verify.submit(); }
    }
  });
}());
