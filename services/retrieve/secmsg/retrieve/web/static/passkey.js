// Passkeys (WebAuthn) for the Secure Message Center: the webmail's only script.
// It asks the browser for a passkey and puts the answer in an ordinary form, which then posts
// like every other form (with its CSRF token). Without this script, or in a browser without
// passkeys, the passkey forms stay hidden and everything else works as before.
(function () {
  "use strict";

  function toBytes(b64url) {
    var b64 = b64url.replace(/-/g, "+").replace(/_/g, "/");
    while (b64.length % 4) { b64 += "="; }
    var raw = atob(b64), out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) { out[i] = raw.charCodeAt(i); }
    return out.buffer;
  }

  function toB64url(buffer) {
    var bytes = new Uint8Array(buffer), raw = "";
    for (var i = 0; i < bytes.length; i++) { raw += String.fromCharCode(bytes[i]); }
    return btoa(raw).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function descriptors(list) {
    return (list || []).map(function (d) {
      return { type: d.type, id: toBytes(d.id), transports: d.transports };
    });
  }

  function creationOptions(o) {
    var pk = Object.assign({}, o);
    pk.challenge = toBytes(o.challenge);
    pk.user = Object.assign({}, o.user, { id: toBytes(o.user.id) });
    pk.excludeCredentials = descriptors(o.excludeCredentials);
    return pk;
  }

  function requestOptions(o) {
    var pk = Object.assign({}, o);
    pk.challenge = toBytes(o.challenge);
    pk.allowCredentials = descriptors(o.allowCredentials);
    return pk;
  }

  // The JSON shape the server's library reads (WebAuthn's PublicKeyCredential.toJSON()).
  function credentialJSON(cred) {
    var r = cred.response, response = { clientDataJSON: toB64url(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = toB64url(r.attestationObject);
      response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      response.authenticatorData = toB64url(r.authenticatorData);
      response.signature = toB64url(r.signature);
      if (r.userHandle) { response.userHandle = toB64url(r.userHandle); }
    }
    return JSON.stringify({
      id: cred.id, rawId: toB64url(cred.rawId), type: cred.type, response: response,
      authenticatorAttachment: cred.authenticatorAttachment || undefined,
      clientExtensionResults: cred.getClientExtensionResults()
    });
  }

  function fail(form, text) {
    var box = form.querySelector("[data-passkey-error]");
    box.textContent = text;
    box.hidden = false;
  }

  function explain(err) {
    if (err && err.name === "NotAllowedError") {
      return "No passkey was used (cancelled or timed out). Try again.";
    }
    if (err && err.name === "InvalidStateError") {
      return "This device already has a passkey for your account.";
    }
    return "The passkey did not work" + (err && err.message ? ": " + err.message : ".");
  }

  function supported() {
    return !!(window.PublicKeyCredential && navigator.credentials);
  }

  function setUp(form) {
    var kind = form.getAttribute("data-passkey");
    var button = form.querySelector("[data-passkey-button]");
    var note = document.querySelector("[data-passkey-unsupported]");
    if (!supported()) { return; }
    if (note) { note.hidden = true; }
    form.hidden = false;
    var busy = false;
    form.addEventListener("submit", function (event) {
      if (form.elements.credential.value) { return; }  // the answer is in: post it
      event.preventDefault();
      if (busy) { return; }
      busy = true;
      button.disabled = true;
      var asked;
      if (kind === "register") {
        var options = JSON.parse(form.querySelector("[data-passkey-options]").textContent);
        asked = navigator.credentials.create({ publicKey: creationOptions(options) });
      } else {
        asked = fetch(form.getAttribute("data-options"), {
          method: "POST", credentials: "same-origin", headers: { "Accept": "application/json" }
        }).then(function (r) {
          if (!r.ok) { throw new Error("the server answered " + r.status); }
          return r.json();
        }).then(function (got) {
          form.elements.ticket.value = got.ticket;
          return navigator.credentials.get(
            { publicKey: requestOptions(JSON.parse(got.options)) });
        });
      }
      asked.then(function (cred) {
        form.elements.credential.value = credentialJSON(cred);
        form.submit();
      }).catch(function (err) {
        busy = false;
        button.disabled = false;
        fail(form, explain(err));
      });
    });
  }

  var forms = document.querySelectorAll("form[data-passkey]");
  for (var i = 0; i < forms.length; i++) { setUp(forms[i]); }
})();
