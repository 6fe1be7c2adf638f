// Copy buttons of the admin pages: each `button.copy[data-copy]` copies the text of the
// element whose id it names and says so on the button for two seconds. Without this
// script the buttons stay hidden and the values can be selected by hand.
'use strict';
(function () {
  // Where the Clipboard API is missing (plain HTTP) or refused: select the text and
  // let the browser copy the selection.
  function copySelection(el) {
    var range = document.createRange();
    range.selectNodeContents(el);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    try {
      return document.execCommand('copy');
    } catch (e) {
      return false;
    }
  }
  function show(button, ok) {
    if (!button.dataset.label) button.dataset.label = button.textContent;
    button.textContent = ok ? 'Copied' : 'Selected: copy it by hand';
    button.classList.toggle('copied', ok);
    clearTimeout(Number(button.dataset.timer || 0));
    button.dataset.timer = String(setTimeout(function () {
      button.textContent = button.dataset.label;
      button.classList.remove('copied');
    }, 2000));
  }
  var buttons = document.querySelectorAll('button.copy[data-copy]');
  Array.prototype.forEach.call(buttons, function (button) {
    var target = document.getElementById(button.dataset.copy);
    if (!target) return;
    button.hidden = false;
    button.addEventListener('click', function () {
      var text = target.textContent;
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(
          function () { show(button, true); },
          function () { show(button, copySelection(target)); });
      } else {
        show(button, copySelection(target));
      }
    });
  });
})();
